"""Legacy data export activities: list bundles, store one bundle (skip it when already stored intact).

A small manifest (`manifest.json` at the destination, local or object store) records each
stored bundle's file, size and sha256; a bundle found there, with a file of that size (and,
locally, that checksum), is not downloaded again: re-runs and restarts never duplicate.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError, field_validator
from temporalio import activity

from activities.batch_job import FullstoryPayload
from activities.deps import ActivityDeps
from activities.download import Downloader, DownloadParams
from activities.fullstory_client import malformed_error
from activities.locations import Destination
from activities.manifest import ManifestFile

MANIFEST = "manifest.json"


class ExportBundle(FullstoryPayload):
    """One entry of `/api/v1/export/list`: Fullstory's capitalised names, unix seconds."""

    start: int = Field(alias="Start")
    stop: int = Field(alias="Stop")
    id: str = Field(alias="ID")

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> str:
        return str(v)

    def filename(self) -> str:
        return f"{self.start}-{self.stop}-{self.id}.json.gz"


class StoreExportBundleParams(BaseModel):
    bundle: ExportBundle
    destination: str | None = None


class StoredBundle(BaseModel):
    location: str
    bytes: int
    sha256: str
    skipped: bool = False  # already stored intact (per the manifest): not downloaded again


class Manifest:
    """`{bundle_id: {"file", "bytes", "sha256"}}` beside the bundles, rewritten whole after each bundle
    (activities/manifest.py: atomic locally, one PUT per version in an object store); a bundle is
    listed only once its file is published complete."""

    def __init__(self, dest: Destination) -> None:
        self.file = ManifestFile(dest, MANIFEST)
        self.dest = dest
        self.path = self.file.local  # local destinations: the manifest's path

    def load(self) -> dict[str, Any]:
        try:
            text = self.file.read()
            data = json.loads(text) if text is not None else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            where = self.file.location
            activity.logger.warning("manifest %s is unreadable; treating every bundle as not stored", where)
            return {}
        return data if isinstance(data, dict) else {}

    def intact(self, bundle_id: str) -> StoredBundle | None:
        entry = self.load().get(bundle_id)
        if not entry:
            return None
        if self.dest.remote is not None:
            # Published before it was listed, and object stores never show a partial object: the size suffices.
            if self.file.size_of(entry["file"]) != entry["bytes"]:
                return None
            where = f"{self.dest.remote}/{entry['file']}"
            return StoredBundle(location=where, bytes=entry["bytes"], sha256=entry["sha256"], skipped=True)
        path = self.path.parent / entry["file"]
        if not path.exists() or path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            return None
        return StoredBundle(location=str(path), bytes=entry["bytes"], sha256=entry["sha256"], skipped=True)

    def record(self, bundle_id: str, file_name: str, nbytes: int, sha256: str) -> None:
        data = self.load()
        data[bundle_id] = {"file": file_name, "bytes": nbytes, "sha256": sha256}
        self.file.write(json.dumps(data, indent=1, sort_keys=True))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LegacyExportActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client = deps.client

    @activity.defn(name="list_export_bundles")
    async def list_export_bundles(self, start: int) -> list[ExportBundle]:
        what = f"list export bundles after {start}"
        response = await self.client.call(
            "GET", "/api/v1/export/list", api="export", what=what, params={"start": start}
        )
        body = response.body if isinstance(response.body, dict) else {}
        try:
            return [ExportBundle.model_validate(b) for b in body.get("exports") or []]
        except ValidationError:
            raise malformed_error(what, "an entry lacks Start, Stop or ID") from None


class BundleStoreActivities:
    """Bundle downloads run on their own task queue, which the server rate limits across all workers
    (FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE): Fullstory allows 2 a minute."""

    task_queue_suffix: ClassVar[str] = "-downloads"

    def __init__(self, deps: ActivityDeps) -> None:
        self.downloads = Downloader(deps.client)
        self.locations = deps.locations

    @classmethod
    def task_queue(cls, main_task_queue: str) -> str:
        return main_task_queue + cls.task_queue_suffix

    @activity.defn(name="store_export_bundle")
    async def store_export_bundle(self, params: StoreExportBundleParams) -> StoredBundle:
        bundle = params.bundle
        dest = self.locations.destination(params.destination)
        manifest = Manifest(dest)
        stored = manifest.intact(bundle.id)
        if stored is not None:
            activity.logger.info("bundle %s already stored intact at %s; skipping", bundle.id, stored.location)
            return stored
        result = await self.downloads.download_into(
            dest,
            DownloadParams.model_validate(
                {
                    "source": {"kind": "legacy_bundle", "bundle_id": bundle.id},
                    "filename": bundle.filename(),
                    "verify_gzip": True,
                }
            ),
        )
        manifest.record(bundle.id, result.filename, result.bytes, result.sha256)
        return StoredBundle(location=result.location, bytes=result.bytes, sha256=result.sha256)
