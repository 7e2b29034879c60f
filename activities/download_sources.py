"""Where a download's bytes come from: the sources, and a URL for each, fetched anew when it expires.

A search export or an operation yields a signed URL on a storage host that expires after minutes
(`expires`, or a 403/404 from the host): `Locator.refresh` asks Fullstory for a fresh one, a few
times in a row without progress at most. A legacy bundle comes from Fullstory's own host with the
key; a plain URL is used as given. Storage hosts never get the Fullstory Authorization header.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, Field, field_validator
from temporalio import activity

from activities.fullstory_client import FullstoryClient
from vocabulary import errors
from vocabulary.contract import redact_url

MAX_URL_REFRESHES = 5  # fresh URLs in a row without a byte of progress
EXPIRY_MARGIN_SECONDS = 5.0


class SearchExportSource(BaseModel):
    kind: Literal["search_export"] = "search_export"
    export_id: str

    def describe(self) -> str:
        return f"search export {self.export_id}"

    def key(self) -> str:
        """Tells this source's file from another's of the same name."""
        return self.export_id

    def default_filename(self) -> str:
        return f"export-{self.export_id}.gz"


class OperationSource(BaseModel):
    kind: Literal["operation"] = "operation"
    operation_id: str

    def describe(self) -> str:
        return f"operation {self.operation_id}"

    def key(self) -> str:
        return self.operation_id

    def default_filename(self) -> str:
        return f"operation-{self.operation_id}.gz"


class LegacyBundleSource(BaseModel):
    kind: Literal["legacy_bundle"] = "legacy_bundle"
    bundle_id: str

    @field_validator("bundle_id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> str:
        return str(v)

    def describe(self) -> str:
        return f"bundle {self.bundle_id}"

    def key(self) -> str:
        return self.bundle_id

    def default_filename(self) -> str:
        return f"bundle-{self.bundle_id}.json.gz"


class UrlSource(BaseModel):
    kind: Literal["url"] = "url"
    url: str

    def describe(self) -> str:
        return redact_url(self.url)

    def key(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:12]

    def default_filename(self) -> str:
        return PurePosixPath(urlsplit(self.url).path).name or "download.gz"


DownloadSource = Annotated[
    SearchExportSource | OperationSource | LegacyBundleSource | UrlSource, Field(discriminator="kind")
]


@dataclass
class DownloadUrl:
    url: str
    authenticated: bool  # legacy bundles come from Fullstory's own host with the key; signed URLs never do
    expires: float | None = None

    def expired(self) -> bool:
        return self.expires is not None and self.expires - EXPIRY_MARGIN_SECONDS <= time.time()


class RetryBudget:
    """Retries allowed in a row without progress: a long download may need many, a stuck one only a few."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.mark = limit, 0, -1

    def spend(self, offset: int) -> bool:
        if offset > self.mark:
            self.used, self.mark = 0, offset
        self.used += 1
        return self.used <= self.limit


class Locator:
    """The URL of one source's bytes, fetched anew (within a budget) when a signed one expires or is refused."""

    def __init__(self, client: FullstoryClient, source: DownloadSource) -> None:
        self.client = client
        self.source = source
        self.can_refresh = isinstance(source, (SearchExportSource, OperationSource))
        self.refreshes = RetryBudget(MAX_URL_REFRESHES)

    async def locate(self) -> DownloadUrl:
        """A fresh URL for the source (signed URLs expire after minutes)."""
        return await locate(self.client, self.source)

    async def refresh(self, offset: int, why: str) -> DownloadUrl:
        source, budget = self.source, self.refreshes
        if not budget.spend(offset):
            raise errors.DOWNLOAD_URL_REJECTED(
                f"download of {source.describe()}: the storage URL kept failing ({why}) "
                f"after {budget.limit} fresh URLs; will retry"
            )
        activity_log(f"{why}: fetching a fresh download URL for {source.describe()} (at byte {offset})")
        return await self.locate()


async def locate(client: FullstoryClient, source: DownloadSource) -> DownloadUrl:
    """A fresh URL for the source (signed URLs expire after minutes)."""
    if isinstance(source, SearchExportSource):
        return await _search_export_url(client, source.export_id)
    if isinstance(source, OperationSource):
        return await _operation_url(client, source.operation_id)
    if isinstance(source, LegacyBundleSource):
        url = client.url(f"/api/v1/export/get?id={quote(source.bundle_id, safe='')}", api="export")
        return DownloadUrl(url, True)
    return DownloadUrl(source.url, False)


async def _search_export_url(client: FullstoryClient, export_id: str) -> DownloadUrl:
    body = (
        await client.call(
            "GET",
            f"/search/v1/exports/{quote(export_id, safe='')}/results",
            what=f"get results of search export {export_id}",
        )
    ).body or {}
    if not body.get("location"):
        raise errors.EXPORT_NOT_READY(f"search export {export_id} has no download location yet")
    return DownloadUrl(body["location"], False, _parse_expires(body.get("expires")))


async def _operation_url(client: FullstoryClient, operation_id: str) -> DownloadUrl:
    body = (
        await client.call(
            "GET",
            f"/operations/v1/{quote(operation_id, safe='')}",
            what=f"get operation {operation_id}",
        )
    ).body or {}
    results = body.get("results") or {}
    if results.get("downloadUrl"):
        return DownloadUrl(results["downloadUrl"], False, _parse_expires(results.get("expires")))
    if results.get("searchExportId"):
        return await _search_export_url(client, str(results["searchExportId"]))
    raise errors.EXPORT_NOT_READY(f"operation {operation_id} has no download URL in its results")


def _parse_expires(value: object) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def activity_log(message: str) -> None:
    if activity.in_activity():
        activity.logger.info(message)
