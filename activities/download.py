"""The one download activity, shared by segment exports and legacy bundles.

- streams to `<dir>/.<activity>.part` in 1 MiB chunks (flat memory), writing and
  hashing on a worker thread while the next chunk arrives, the gzip check on
  another thread; heartbeats the bytes on disk;
- a new attempt after a crash keeps the part, re-hashes it and asks for the
  rest with `Range: bytes=N-`; a 200 instead of 206 restarts cleanly from 0;
- an expired signed URL (403/404 from the storage host, or `expires` passed)
  is fetched anew from its source and the download carries on;
- connection resets and timeouts mid-body are retried within the attempt;
- verifies the length and the gzip stream, then fsync + atomic rename: a file
  under its final name is always complete.
Storage hosts never get the Fullstory Authorization header; signed URLs are
logged and reported without their query string.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fullstory_client import FullstoryClient, error_from_response, error_from_transport, redact_url
from activities.gzip_check import GzipChecker, GzipCorrupt, ThreadedGzipChecker
from activities.heartbeat import Heartbeater, resume_details
from activities.storage import publish, resolve_destination, safe_name
from workflows.activity_types import (
    DOWNLOAD_CORRUPT,
    DOWNLOAD_TO_DESTINATION,
    DownloadParams,
    DownloadResult,
    DownloadSource,
    LegacyBundleSource,
    OperationSource,
    SearchExportSource,
)

CHUNK = 1 << 20
MAX_URL_REFRESHES = 5
MAX_TRANSIENT_RETRIES = 5
EXPIRY_MARGIN_SECONDS = 5.0


@dataclass
class Location:
    url: str
    authenticated: bool  # legacy bundles come from Fullstory's own host with the key; signed URLs never do
    expires: float | None = None


class DownloadCursor(BaseModel):
    """Heartbeat: where the part is and how much of it is on disk."""

    part: str
    bytes_done: int = 0


def sanitize_filename(name: str | None, default: str) -> str:
    """A bare, safe file name: no directories, no traversal, no absolute paths, no control characters."""
    if not name:
        return default
    base = re.split(r"[\\/]", name.strip())[-1]
    base = safe_name(base.lstrip("."), max_len=150)
    return default if base in ("", "unnamed") else base


def filename_from_disposition(header: str | None) -> str | None:
    if not header:
        return None
    m = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, re.I)
    if m:
        return unquote(m.group(1).strip().strip('"'))
    m = re.search(r'filename\s*=\s*"([^"]*)"', header, re.I) or re.search(r"filename\s*=\s*([^;]+)", header, re.I)
    return m.group(1).strip() if m else None


def _parse_expires(value: object) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _Sink:
    """File writes, sha256 and gzip feeding: run on a worker thread, one chunk at a time, in order."""

    def __init__(self, part: Path, keep: int, verify_gzip: bool) -> None:
        self.part = part
        self.verify_gzip = verify_gzip
        self.sha = hashlib.sha256()
        self.checker = ThreadedGzipChecker() if verify_gzip else None
        # Unbuffered: what a heartbeat claims is on disk (in the OS) is really there when the worker is killed.
        self.fh = open(part, "r+b" if keep else "wb", buffering=0)
        self.fh.truncate(keep)
        # Resuming: the hash and the gzip check must see the bytes already on disk first.
        self.fh.seek(0)
        left = keep
        while left:
            chunk = self.fh.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            self._digest(chunk)
        self.fh.seek(keep)
        self.size = keep

    def _digest(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        if self.checker is not None:
            self.checker.feed(chunk)

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self._digest(chunk)
        self.size += len(chunk)

    def restart(self) -> None:
        """The server ignored Range: start the file, the hash and the check over."""
        if self.checker is not None:
            self.checker.abandon()
        self.checker = ThreadedGzipChecker() if self.verify_gzip else None
        self.sha = hashlib.sha256()
        self.fh.seek(0)
        self.fh.truncate(0)
        self.size = 0

    def finish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        if self.checker is not None:
            self.checker.finish()

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        if self.checker is not None:
            self.checker.abandon()


class DownloadActivities:
    def __init__(self, client: FullstoryClient, data_dir: str) -> None:
        self.client = client
        self.data_dir = data_dir

    async def locate(self, source: DownloadSource) -> Location:
        """A fresh URL for the source (signed URLs expire after minutes)."""
        if isinstance(source, SearchExportSource):
            body = (await self.client.call(
                "GET", f"/search/v1/exports/{quote(source.export_id, safe='')}/results",
                what=f"get results of search export {source.export_id}")).body or {}
            if not body.get("location"):
                raise ApplicationError(f"search export {source.export_id} has no download location yet",
                                       type="ExportNotReady")
            return Location(body["location"], False, _parse_expires(body.get("expires")))
        if isinstance(source, OperationSource):
            body = (await self.client.call(
                "GET", f"/operations/v1/{quote(source.operation_id, safe='')}",
                what=f"get operation {source.operation_id}")).body or {}
            results = body.get("results") or {}
            if results.get("downloadUrl"):
                return Location(results["downloadUrl"], False, _parse_expires(results.get("expires")))
            if results.get("searchExportId"):
                return await self.locate(SearchExportSource(export_id=str(results["searchExportId"])))
            raise ApplicationError(f"operation {source.operation_id} has no download URL in its results",
                                   type="ExportNotReady")
        if isinstance(source, LegacyBundleSource):
            url = self.client.url(f"/api/v1/export/get?id={quote(source.bundle_id, safe='')}", api="export")
            return Location(url, True)
        return Location(source.url, False)

    @staticmethod
    def default_filename(source: DownloadSource) -> str:
        if isinstance(source, SearchExportSource):
            return f"export-{source.export_id}.gz"
        if isinstance(source, OperationSource):
            return f"operation-{source.operation_id}.gz"
        if isinstance(source, LegacyBundleSource):
            return f"bundle-{source.bundle_id}.json.gz"
        return Path(urlsplit(source.url).path).name or "download.gz"

    @activity.defn(name=DOWNLOAD_TO_DESTINATION)
    async def download_to_destination(self, params: DownloadParams) -> DownloadResult:
        dest = resolve_destination(params.destination, self.data_dir)
        directory = dest.local / safe_name(params.subdir) if params.subdir else dest.local
        directory.mkdir(parents=True, exist_ok=True)
        info = activity.info()
        part = directory / f".{safe_name(info.workflow_id, 80)}-{safe_name(info.activity_id, 40)}.part"
        cursor = resume_details(DownloadCursor)
        keep = 0
        if cursor is not None and cursor.part == str(part) and part.exists() and part.stat().st_size >= cursor.bytes_done:
            keep = cursor.bytes_done
        async with Heartbeater() as heartbeater:
            result = await self.download(params, part, directory, keep, heartbeater)
        if dest.remote is not None:
            result.location = await publish(dest, Path(result.location))
        return result

    async def download(self, params: DownloadParams, part: Path, directory: Path, keep: int,
                       heartbeater: Heartbeater | None = None) -> DownloadResult:
        """The core, callable without Temporal: download `params.source` into `directory` via `part`."""
        loop = asyncio.get_running_loop()
        sink = await loop.run_in_executor(None, _Sink, part, keep, params.verify_gzip)
        if keep:
            activity_log(f"resuming download at byte {keep} from {part.name}")
        location = await self.locate(params.source)
        refreshes = transient = 0
        total: int | None = None
        content_type: str | None = None
        served_name: str | None = None
        try:
            while True:
                if location.expires is not None and location.expires - EXPIRY_MARGIN_SECONDS <= time.time():
                    location, refreshes = await self._refresh(params.source, refreshes, "the URL's expiry passed")
                headers = {"Accept-Encoding": "identity"}  # store the gzip file as served, never decoded
                if location.authenticated:
                    headers.update(self.client.auth_headers())
                if sink.size:
                    headers["Range"] = f"bytes={sink.size}-"
                what = f"download {redact_url(location.url)}"
                try:
                    async with self.client.http.stream("GET", location.url, headers=headers) as response:
                        if response.status_code in (403, 404) and not location.authenticated:
                            await response.aread()
                            location, refreshes = await self._refresh(
                                params.source, refreshes, f"storage answered {response.status_code}")
                            continue
                        if response.status_code == 416 and total is not None and sink.size == total:
                            break  # we already have every byte
                        if not response.is_success:
                            await response.aread()
                            raise error_from_response(response, what)
                        if sink.size and response.status_code == 200:
                            activity_log("server ignored Range: restarting the download from byte 0")
                            await loop.run_in_executor(None, sink.restart)
                        total = _expected_total(response, sink.size)
                        content_type = response.headers.get("content-type", content_type)
                        served_name = filename_from_disposition(response.headers.get("content-disposition")) or served_name
                        pending: asyncio.Future | None = None
                        async for chunk in response.aiter_raw(CHUNK):
                            if pending is not None:
                                await pending
                                _beat(heartbeater, part, sink.size)
                            pending = loop.run_in_executor(None, sink.write, chunk)
                        if pending is not None:
                            await pending
                            _beat(heartbeater, part, sink.size)
                except httpx.TransportError as exc:
                    transient += 1
                    if transient > MAX_TRANSIENT_RETRIES:
                        raise error_from_transport(exc, what) from None
                    activity_log(f"{what}: {type(exc).__name__} at byte {sink.size}; retrying ({transient})")
                    await asyncio.sleep(min(0.2 * 2 ** transient, 5.0))
                    continue
                if total is not None and sink.size != total:
                    transient += 1
                    if transient > MAX_TRANSIENT_RETRIES:
                        raise ApplicationError(f"{what}: body ended at byte {sink.size} of {total}; will retry",
                                               type="DownloadIncomplete")
                    continue
                break
            await loop.run_in_executor(None, sink.finish)
        except GzipCorrupt as e:
            sink.close()
            part.unlink(missing_ok=True)  # never keep or resume from bytes that do not inflate
            raise ApplicationError(f"download of {_describe(params.source)} is not a valid gzip: {e}",
                                   type=DOWNLOAD_CORRUPT) from None
        except BaseException:
            sink.close()
            raise
        filename = sanitize_filename(params.filename or served_name, self.default_filename(params.source))
        final = directory / filename
        os.replace(part, final)
        _beat(heartbeater, part, sink.size)
        return DownloadResult(location=str(final), bytes=sink.size, sha256=sink.sha.hexdigest(),
                              content_type=content_type, filename=filename)

    async def _refresh(self, source: DownloadSource, refreshes: int, why: str) -> tuple[Location, int]:
        if refreshes >= MAX_URL_REFRESHES:
            raise ApplicationError(f"download of {_describe(source)}: the storage URL kept failing ({why}) "
                                   f"after {refreshes} fresh URLs; will retry", type="DownloadUrlRejected")
        activity_log(f"{why}: fetching a fresh download URL for {_describe(source)}")
        return await self.locate(source), refreshes + 1


def _expected_total(response: httpx.Response, offset: int) -> int | None:
    if response.status_code == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("content-range", ""))
        if not m or int(m.group(1)) != offset:
            raise ApplicationError(f"Range answer starts at the wrong byte ({response.headers.get('content-range')}, "
                                   f"wanted {offset})", type="DownloadIncomplete")
        return int(m.group(3)) if m.group(3) != "*" else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _beat(heartbeater: Heartbeater | None, part: Path, size: int) -> None:
    if heartbeater is not None:
        heartbeater.update(DownloadCursor(part=str(part), bytes_done=size))


def _describe(source: DownloadSource) -> str:
    if isinstance(source, SearchExportSource):
        return f"search export {source.export_id}"
    if isinstance(source, OperationSource):
        return f"operation {source.operation_id}"
    if isinstance(source, LegacyBundleSource):
        return f"bundle {source.bundle_id}"
    return redact_url(source.url)


def activity_log(message: str) -> None:
    if activity.in_activity():
        activity.logger.info(message)


__all__ = ["DownloadActivities", "GzipChecker", "sanitize_filename", "filename_from_disposition"]
