"""The one download activity, shared by segment exports and legacy bundles.

- streams to `<dir>/.<workflow>-<activity>.part` in 1 MiB chunks (flat memory):
  the event loop reads the next chunk while a writer thread writes and hashes
  the last one and a child process checks the gzip stream (gzip_check.py);
  heartbeats the bytes on disk;
- a new attempt after a crash keeps what the part's journal (journal.py) says
  is good on disk (after a worker kill: every byte written; after a reboot:
  up to the last fsync, every SYNC_BYTES / SYNC_SECONDS), not what the last
  heartbeat said; re-hashes (and re-checks) it and asks for the rest with
  `Range: bytes=N-`; a 200 instead of 206 restarts cleanly from 0; a 416 for
  a part that is already whole just finishes it;
- an expired signed URL (403/404 from the storage host, or `expires` passed)
  is fetched anew from its source and the download carries on;
- connection resets and timeouts mid-body are retried within the attempt from
  the current offset (a few times in a row without progress, then Temporal's
  retry takes over and resumes from the part);
- verifies the length and the gzip stream, then fsync + atomic rename: a file
  under its final name is always complete, and never replaces a different one.
Storage hosts never get the Fullstory Authorization header; signed URLs are
logged and reported without their query string.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

import httpx
from pydantic import BaseModel, Field, field_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from activities.fullstory_client import FullstoryClient, error_from_response, error_from_transport, retry_after_of
from activities.gzip_check import GzipChecker, GzipCorrupt, start_checker
from activities.heartbeat import Heartbeater, heartbeat_interval, resume_details
from activities.journal import SYNC_BYTES, Journal
from activities.locations import Destination, safe_name
from vocabulary import errors
from vocabulary.contract import redact_url

CHUNK = 1 << 20
HOLD_SECONDS = 0.25  # received bytes wait at most this long for a full chunk before they are written
MAX_URL_REFRESHES = 5  # fresh URLs in a row without a byte of progress
MAX_TRANSIENT_RETRIES = 5  # resets/timeouts in a row without a byte of progress
EXPIRY_MARGIN_SECONDS = 5.0
RETRY_BACKOFF_SECONDS = 0.2  # doubled per retry in a row, capped at 5 s
STORAGE_HINT = "the storage host refused the download URL"


# --- Where a download comes from, and the params --------------------------------------------------


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


class DownloadParams(BaseModel):
    source: DownloadSource
    destination: str | None = None
    subdir: str | None = None
    filename: str | None = None  # final name; else Content-Disposition (sanitised); else from the source
    verify_gzip: bool = True


class DownloadResult(BaseModel):
    location: str
    bytes: int
    sha256: str
    content_type: str | None = None
    filename: str


@dataclass
class Location:
    url: str
    authenticated: bool  # legacy bundles come from Fullstory's own host with the key; signed URLs never do
    expires: float | None = None

    def expired(self) -> bool:
        return self.expires is not None and self.expires - EXPIRY_MARGIN_SECONDS <= time.time()


class DownloadCursor(BaseModel):
    """Heartbeat: where the part is and how much of it is on disk (progress; a part without a journal,
    left by an older version, resumes from it)."""

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


class _Budget:
    """Retries allowed in a row without progress: a long download may need many, a stuck one only a few."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.mark = limit, 0, -1

    def spend(self, offset: int) -> bool:
        if offset > self.mark:
            self.used, self.mark = 0, offset
        self.used += 1
        return self.used <= self.limit


class _Sink:
    """File writes, sha256 and gzip feeding; runs on the download's writer thread, one chunk at a time, in order."""

    def __init__(self, part: Path, keep: int, verify_gzip: bool) -> None:
        self.part = part
        self.verify_gzip = verify_gzip
        self.journal = Journal(part)
        self.journal.lock()  # before anything is read or written (an earlier attempt may live on)
        keep = min(keep, part.stat().st_size) if keep and part.exists() else 0  # never pad a short part
        self.sha = hashlib.sha256()
        self.checker = start_checker() if verify_gzip else None
        # Unbuffered: every byte written is in the OS when the worker is killed (the journal counts on it).
        self.fh = open(part, "r+b" if keep else "wb", buffering=0)
        self.fh.truncate(keep)
        # Resuming: the hash and the gzip check must see the bytes already on disk first (measured:
        # see bench/bench_kill_resume.py --reread; the gzip check dominates, sha256 alone is ~1.5 GB/s).
        started = time.monotonic()
        self.size = 0
        while self.size < keep and (chunk := self.fh.read(min(CHUNK, keep - self.size))):
            self._digest(chunk)
            self.size += len(chunk)
        self.reread_seconds = time.monotonic() - started
        self.fh.seek(self.size)
        self.journal.restart({"bytes": self.size})
        self.synced = self.size

    def _digest(self, chunk: bytes) -> None:
        self.sha.update(chunk)  # SHA-NI: ~2 GB/s, releases the GIL; measured no faster on a thread of its own
        if self.checker is not None:
            self.checker.feed(chunk)

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self._digest(chunk)
        self.size += len(chunk)
        if self.size - self.synced >= SYNC_BYTES or self.journal.sync_due():
            self.journal.append({"bytes": self.size}, sync=True)  # the floor after a reboot
            self.synced = self.size

    def restart(self) -> None:
        """The server ignored Range (or the part was longer than the file): start file, hash and check over."""
        if self.checker is not None:
            self.checker.abandon()
        self.checker = start_checker() if self.verify_gzip else None
        self.sha = hashlib.sha256()
        self.fh.seek(0)
        self.fh.truncate(0)
        self.size = 0
        self.journal.restart({"bytes": 0})
        self.synced = 0

    def finish(self) -> None:
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.journal.unlock()
        if self.checker is not None:
            self.checker.finish()

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.journal.unlock()
        if self.checker is not None:
            self.checker.abandon()


class DownloadActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client: FullstoryClient = deps.client
        self.locations = deps.locations

    async def locate(self, source: DownloadSource) -> Location:
        """A fresh URL for the source (signed URLs expire after minutes)."""
        if isinstance(source, SearchExportSource):
            body = (
                await self.client.call(
                    "GET",
                    f"/search/v1/exports/{quote(source.export_id, safe='')}/results",
                    what=f"get results of search export {source.export_id}",
                )
            ).body or {}
            if not body.get("location"):
                raise errors.EXPORT_NOT_READY(f"search export {source.export_id} has no download location yet")
            return Location(body["location"], False, _parse_expires(body.get("expires")))
        if isinstance(source, OperationSource):
            body = (
                await self.client.call(
                    "GET",
                    f"/operations/v1/{quote(source.operation_id, safe='')}",
                    what=f"get operation {source.operation_id}",
                )
            ).body or {}
            results = body.get("results") or {}
            if results.get("downloadUrl"):
                return Location(results["downloadUrl"], False, _parse_expires(results.get("expires")))
            if results.get("searchExportId"):
                return await self.locate(SearchExportSource(export_id=str(results["searchExportId"])))
            raise errors.EXPORT_NOT_READY(f"operation {source.operation_id} has no download URL in its results")
        if isinstance(source, LegacyBundleSource):
            url = self.client.url(f"/api/v1/export/get?id={quote(source.bundle_id, safe='')}", api="export")
            return Location(url, True)
        return Location(source.url, False)

    @activity.defn(name="download_to_destination")
    async def download_to_destination(self, params: DownloadParams) -> DownloadResult:
        return await self.download_into(self.locations.destination(params.destination), params)

    async def download_into(self, dest: Destination, params: DownloadParams) -> DownloadResult:
        """The activity's body, for a destination already resolved (`params.destination` is not read)."""
        directory = dest.local / safe_name(params.subdir) if params.subdir else dest.local
        directory.mkdir(parents=True, exist_ok=True)
        info = activity.info()
        part = directory / f".{safe_name(info.workflow_id or 'no-workflow', 80)}-{safe_name(info.activity_id, 40)}.part"
        keep = resume_point(part, resume_details(DownloadCursor))
        async with Heartbeater() as heartbeater:
            beat = lambda size: heartbeater.update(DownloadCursor(part=str(part), bytes_done=size))  # noqa: E731
            result = await self.download(params, part, directory, keep, beat)
        if dest.remote is not None:
            result.location = await dest.publish(Path(result.location))
        return result

    async def download(
        self,
        params: DownloadParams,
        part: Path,
        directory: Path,
        keep: int = 0,
        heartbeat: Callable[[int], None] | None = None,
    ) -> DownloadResult:
        """The core, callable without Temporal: download `params.source` into `directory` via `part`.

        `keep`: bytes of an existing `part` to resume from (`resume_point`). `heartbeat(bytes_on_disk)`
        is called at most every `heartbeat_interval()` and once more at the end.
        """
        beat = _Throttled(heartbeat)
        beat(keep, force=True)  # re-hashing a big kept part takes a while: keep the resume point meanwhile
        source = params.source
        writer = ThreadPoolExecutor(1, thread_name_prefix="download-writer")  # one thread: writes stay in order
        loop = asyncio.get_running_loop()
        sink: _Sink | None = None
        refreshes, transient = _Budget(MAX_URL_REFRESHES), _Budget(MAX_TRANSIENT_RETRIES)
        can_refresh = isinstance(source, (SearchExportSource, OperationSource))
        fresh = True
        total: int | None = None
        content_type: str | None = None
        served_name: str | None = None
        try:
            sink = await loop.run_in_executor(writer, _Sink, part, keep, params.verify_gzip)
            location = await self.locate(source)
            if sink.size:
                activity_log(
                    f"resuming download of {source.describe()} at byte {sink.size} "
                    f"(hash and gzip check rebuilt from the part in {sink.reread_seconds:.2f} s)"
                )
            while True:
                if not fresh and location.expired():
                    location = await self._refresh(source, refreshes, sink.size, "the URL's expiry passed")
                fresh = False
                headers = {"Accept-Encoding": "identity"}  # store the gzip file as served, never decoded
                if location.authenticated:
                    headers.update(self.client.auth_headers())
                if sink.size:
                    headers["Range"] = f"bytes={sink.size}-"
                what = f"download {redact_url(location.url)}"
                try:
                    # Redirects: httpx drops Authorization when one leaves Fullstory's host.
                    async with self.client.http.stream(
                        "GET", location.url, headers=headers, follow_redirects=True
                    ) as response:
                        status = response.status_code
                        retry_after = retry_after_of(response)
                        if location.authenticated:  # Fullstory's own API (legacy bundles), not a storage host
                            self.client.metrics.http_call("GET", urlsplit(location.url).path, status, retry_after)
                        if status in (403, 404) and not location.authenticated and can_refresh:
                            await response.aread()
                            location = await self._refresh(source, refreshes, sink.size, f"storage answered {status}")
                            fresh = True
                            continue
                        if status == 416 and sink.size:
                            await response.aread()
                            if _unsatisfied_total(response) == sink.size:
                                total = sink.size  # a previous attempt got every byte but died before the rename
                                break
                            activity_log(f"{what}: Range past the end of the file; restarting from byte 0")
                            await loop.run_in_executor(writer, sink.restart)
                            continue
                        if not response.is_success:
                            await response.aread()
                            raise error_from_response(
                                response,
                                what,
                                retry_after=retry_after,
                                hint=None if location.authenticated else f"{STORAGE_HINT} (HTTP {status})",
                            )
                        if sink.size and status == 200:
                            activity_log(f"{what}: server ignored Range; restarting from byte 0")
                            await loop.run_in_executor(writer, sink.restart)
                        total = _expected_total(response, sink.size)
                        content_type = response.headers.get("content-type", content_type)
                        served_name = (
                            filename_from_disposition(response.headers.get("content-disposition")) or served_name
                        )
                        before = sink.size
                        try:
                            await _pump(response, sink, writer, beat)
                        finally:
                            self.client.metrics.bytes_downloaded.add(
                                max(0, sink.size - before), {"source": source.kind}
                            )
                except httpx.TransportError as exc:
                    if not transient.spend(sink.size):
                        raise error_from_transport(exc, what) from None
                    activity_log(f"{what}: {type(exc).__name__} at byte {sink.size}; retrying ({transient.used})")
                    await asyncio.sleep(min(RETRY_BACKOFF_SECONDS * 2**transient.used, 5.0))
                    continue
                if total is not None and sink.size != total:
                    if not transient.spend(sink.size):
                        raise errors.DOWNLOAD_INCOMPLETE(
                            f"{what}: body ended at byte {sink.size} of {total}; will retry"
                        )
                    continue
                break
            await loop.run_in_executor(writer, sink.finish)
        except GzipCorrupt as e:
            await _discard(loop, writer, sink, part)  # never keep or resume from bytes that do not inflate
            raise errors.DOWNLOAD_CORRUPT(f"download of {source.describe()} is not a valid gzip: {e}") from None
        except ApplicationError as e:
            if e.non_retryable:
                await _discard(loop, writer, sink, part)  # no retry will resume it
            elif sink is not None:
                await loop.run_in_executor(writer, sink.close)
            raise
        except BaseException:
            if sink is not None:
                sink.close()  # also on cancellation: the writer thread is idle (_pump waited for it)
            raise
        finally:
            writer.shutdown(wait=False)
        wanted = sanitize_filename(params.filename or served_name, source.default_filename())
        final = await asyncio.to_thread(
            _commit,
            part,
            directory,
            wanted,
            safe_name(source.key(), 60),
            sink.size,
            sink.sha.hexdigest(),
            params.filename is not None,
        )
        sink.journal.remove()
        beat(sink.size, force=True)
        return DownloadResult(
            location=str(final),
            bytes=sink.size,
            sha256=sink.sha.hexdigest(),
            content_type=content_type,
            filename=final.name,
        )

    async def _refresh(self, source: DownloadSource, budget: _Budget, offset: int, why: str) -> Location:
        if not budget.spend(offset):
            raise errors.DOWNLOAD_URL_REJECTED(
                f"download of {source.describe()}: the storage URL kept failing ({why}) "
                f"after {budget.limit} fresh URLs; will retry"
            )
        activity_log(f"{why}: fetching a fresh download URL for {source.describe()} (at byte {offset})")
        return await self.locate(source)


async def _pump(response: httpx.Response, sink: _Sink, writer: ThreadPoolExecutor, beat: _Throttled) -> None:
    """Body to sink in ~1 MiB chunks: the next one arrives while the writer thread stores the last (one in flight).

    A slow body is handed over every HOLD_SECONDS too, so a kill loses little of what was received.
    """
    pending: Future | None = None
    pieces: list[bytes] = []
    size = 0
    since = 0.0

    async def submit() -> None:
        nonlocal pending, pieces, size
        if pending is not None:
            await asyncio.wrap_future(pending)
            beat(sink.size)
        pending = writer.submit(sink.write, b"".join(pieces))
        pieces, size = [], 0

    try:
        async for piece in response.aiter_raw():  # raw: the gzip bytes as served, never decoded
            if not pieces:
                since = time.monotonic()
            pieces.append(piece)
            size += len(piece)
            if size >= CHUNK or time.monotonic() - since >= HOLD_SECONDS:
                await submit()
        if pieces:
            await submit()
    except httpx.TransportError:
        if pieces:
            await submit()  # bytes received before a reset are good: keep them, resume after them
        raise
    finally:
        if pending is not None:
            # The write in flight lands before anyone reads sink.size or closes the file (even when cancelled).
            if not pending.done():
                await asyncio.wait([asyncio.wrap_future(pending)])
            if not pending.cancelled():
                pending.result()  # its error (GzipCorrupt, disk full) outranks a reset of the connection
    beat(sink.size)


async def _discard(loop: asyncio.AbstractEventLoop, writer: ThreadPoolExecutor, sink: _Sink | None, part: Path) -> None:
    if sink is not None:
        await loop.run_in_executor(writer, sink.close)
    part.unlink(missing_ok=True)
    Journal(part).remove()


def _commit(part: Path, directory: Path, wanted: str, tag: str, size: int, sha256: str, overwrite: bool) -> Path:
    """Rename the complete part to its final name (atomic); never over a different file unless the caller named it."""
    final = directory / wanted
    if not overwrite:
        stem, dot, ext = wanted.partition(".")
        n = 1
        while final.exists() and not _same_file(final, size, sha256):
            # Two exports served under one name ("export.ndjson.gz"): keep both.
            final = directory / f"{stem}-{tag}{'' if n == 1 else f'-{n}'}{dot}{ext}"
            n += 1
    os.replace(part, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)
    return final


def resume_point(part: Path, cursor: DownloadCursor | None) -> int:
    """Bytes of `part` a new attempt keeps: what its journal says is good on disk.

    Written in this boot (a worker killed, the machine up): every byte in the part. Else (a reboot,
    or a part on a volume shared with another machine): up to the last fsync. A part without a
    journal (written by an older version) is trusted up to its last heartbeat, as it was then.
    """
    found = Journal(part).trusted()
    if found is not None:
        state, same_boot = found
        return part.stat().st_size if same_boot and part.exists() else state["bytes"]
    if cursor is not None and cursor.part == str(part) and part.exists() and part.stat().st_size >= cursor.bytes_done:
        return cursor.bytes_done
    return 0


def _same_file(path: Path, size: int, sha256: str) -> bool:
    """The same bytes already stored (an earlier attempt renamed it, then died): replace it, no duplicate."""
    if path.stat().st_size != size:
        return False
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest() == sha256


class _Throttled:
    """Per chunk would be 500 heartbeats/s on loopback: at most one per heartbeat interval."""

    def __init__(self, heartbeat: Callable[[int], None] | None) -> None:
        self.heartbeat, self.last, self.interval = heartbeat, 0.0, heartbeat_interval()

    def __call__(self, size: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.heartbeat is not None and (force or now - self.last >= self.interval):
            self.last = now
            self.heartbeat(size)


def _expected_total(response: httpx.Response, offset: int) -> int | None:
    if response.status_code == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("content-range", ""))
        if not m or int(m.group(1)) != offset:
            raise errors.DOWNLOAD_INCOMPLETE(
                f"Range answer starts at the wrong byte ({response.headers.get('content-range')}, wanted {offset})"
            )
        return int(m.group(3)) if m.group(3) != "*" else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _unsatisfied_total(response: httpx.Response) -> int | None:
    """The file size from a 416's `Content-Range: bytes */N`."""
    m = re.match(r"bytes \*/(\d+)", response.headers.get("content-range", ""))
    return int(m.group(1)) if m else None


def activity_log(message: str) -> None:
    if activity.in_activity():
        activity.logger.info(message)


__all__ = ["DownloadActivities", "GzipChecker", "sanitize_filename", "filename_from_disposition"]
