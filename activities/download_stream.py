"""Moving a download's bytes: GETs from the part's end until the part holds the whole file.

- the body is read raw (the gzip file as served, never decoded) in ~1 MiB chunks: the event loop
  reads the next chunk while the writer thread (download_sink.py) writes and hashes the last one;
  heartbeats the bytes on disk, at most once per heartbeat interval;
- a part with bytes asks for the rest with `Range: bytes=N-`; a 200 instead of 206 restarts
  cleanly from 0; a 416 for a part that is already whole just finishes it;
- an expired signed URL (403/404 from the storage host, or `expires` passed) is fetched anew
  (download_sources.py) and the download carries on;
- connection resets and timeouts mid-body, and a body that ends short, are retried within the
  attempt from the current offset (a few times in a row without progress, then Temporal's retry
  takes over and resumes from the part).
Signed URLs are logged and reported without their query string.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from activities.download_sink import CHUNK, PartWriter
from activities.download_sources import DownloadUrl, Locator, RetryBudget, activity_log
from activities.fullstory_client import (
    FullstoryClient,
    error_from_response,
    error_from_transport,
    record_response,
    retry_after_of,
)
from activities.heartbeat import heartbeat_interval
from vocabulary import errors
from vocabulary.contract import redact_url

HOLD_SECONDS = 0.25  # received bytes wait at most this long for a full chunk before they are written
MAX_TRANSIENT_RETRIES = 5  # resets/timeouts in a row without a byte of progress
RETRY_BACKOFF_SECONDS = 0.2  # doubled per retry in a row, capped at 5 s
STORAGE_HINT = "the storage host refused the download URL"


class Throttled:
    """Per chunk would be 500 heartbeats/s on loopback: at most one per heartbeat interval."""

    def __init__(self, heartbeat: Callable[[int], None] | None) -> None:
        self.heartbeat, self.last, self.interval = heartbeat, 0.0, heartbeat_interval()

    def __call__(self, size: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.heartbeat is not None and (force or now - self.last >= self.interval):
            self.last = now
            self.heartbeat(size)


@dataclass
class Served:
    """What the server said about the file, beside its bytes."""

    content_type: str | None = None
    filename: str | None = None  # from Content-Disposition


class Stream:
    """One attempt's GETs of one source into one part, until the part holds the whole file."""

    def __init__(
        self, client: FullstoryClient, locator: Locator, location: DownloadUrl, part: PartWriter, beat: Throttled
    ) -> None:
        self.client, self.locator, self.location, self.part, self.beat = client, locator, location, part, beat
        self.transient = RetryBudget(MAX_TRANSIENT_RETRIES)
        self.served = Served()
        self.fresh = True  # the URL was just fetched: no need to look at its expiry
        self.total: int | None = None  # the file's size, as the last answer gave it

    @property
    def what(self) -> str:
        return f"download {redact_url(self.location.url)}"

    async def run(self) -> Served:
        """GET until the part holds the whole file; then what the server said about it."""
        if self.part.size:
            activity_log(
                f"resuming download of {self.locator.source.describe()} at byte {self.part.size} "
                f"(hash and gzip check rebuilt from the part in {self.part.sink.reread_seconds:.2f} s)"
            )
        while True:
            if not self.fresh and self.location.expired():
                self.location = await self.locator.refresh(self.part.size, "the URL's expiry passed")
            self.fresh = False
            what = self.what
            try:
                if await self._get():
                    return self.served
            except httpx.TransportError as exc:
                await self._retry_after_reset(exc, what)

    async def _get(self) -> bool:
        """One GET from the part's end; True when the part then holds the whole file."""
        headers = {"Accept-Encoding": "identity"}  # store the gzip file as served, never decoded
        if self.location.authenticated:
            headers.update(self.client.auth_headers())
        if self.part.size:
            headers["Range"] = f"bytes={self.part.size}-"
        # One span per GET: the route template and host, never the signed URL's query (client.span).
        with self.client.span("GET", self.location.url, storage=not self.location.authenticated) as span:
            if self.part.size:
                span.set_attribute("fullstory.range_start", self.part.size)
            # Redirects: httpx drops Authorization when one leaves Fullstory's host.
            async with self.client.http.stream(
                "GET", self.location.url, headers=headers, follow_redirects=True
            ) as response:
                record_response(span, response.status_code, retry_after_of(response))
                if not await self._take(response):
                    return False
        return self._whole()

    async def _take(self, response: httpx.Response) -> bool:
        """The answer's body into the part; False when the part must ask again (a fresh URL, or from byte 0)."""
        location, what = self.location, self.what
        status = response.status_code
        retry_after = retry_after_of(response)
        if location.authenticated:  # Fullstory's own API (legacy bundles), not a storage host
            self.client.metrics.http_call("GET", urlsplit(location.url).path, status, retry_after)
        if status in (403, 404) and not location.authenticated and self.locator.can_refresh:
            await response.aread()
            self.location = await self.locator.refresh(self.part.size, f"storage answered {status}")
            self.fresh = True
            return False
        if status == 416 and self.part.size:
            await response.aread()
            return await self._past_the_end(response)
        if not response.is_success:
            await response.aread()
            raise error_from_response(
                response,
                what,
                retry_after=retry_after,
                hint=None if location.authenticated else f"{STORAGE_HINT} (HTTP {status})",
            )
        await self._receive(response)
        return True

    async def _past_the_end(self, response: httpx.Response) -> bool:
        """A 416: the part is already whole, or longer than the file (then start over from byte 0)."""
        if _unsatisfied_total(response) == self.part.size:
            self.total = self.part.size  # a previous attempt got every byte but died before the rename
            return True
        activity_log(f"{self.what}: Range past the end of the file; restarting from byte 0")
        await self.part.restart()
        return False

    async def _receive(self, response: httpx.Response) -> None:
        if self.part.size and response.status_code == 200:
            activity_log(f"{self.what}: server ignored Range; restarting from byte 0")
            await self.part.restart()
        self.total = _expected_total(response, self.part.size)
        served = self.served
        served.content_type = response.headers.get("content-type", served.content_type)
        served.filename = filename_from_disposition(response.headers.get("content-disposition")) or served.filename
        before = self.part.size
        try:
            await pump(response, self.part, self.beat)
        finally:
            self.client.metrics.bytes_downloaded.add(
                max(0, self.part.size - before), {"source": self.locator.source.kind}
            )

    def _whole(self) -> bool:
        """The body ended: True when the part is the whole file; short, False (ask again, a few times in a row)."""
        if self.total is not None and self.part.size != self.total:
            if not self.transient.spend(self.part.size):
                raise errors.DOWNLOAD_INCOMPLETE(
                    f"{self.what}: body ended at byte {self.part.size} of {self.total}; will retry"
                )
            return False
        return True

    async def _retry_after_reset(self, exc: httpx.TransportError, what: str) -> None:
        if not self.transient.spend(self.part.size):
            raise error_from_transport(exc, what) from None
        activity_log(f"{what}: {type(exc).__name__} at byte {self.part.size}; retrying ({self.transient.used})")
        await asyncio.sleep(min(RETRY_BACKOFF_SECONDS * 2**self.transient.used, 5.0))


async def pump(response: httpx.Response, part: PartWriter, beat: Throttled) -> None:
    """Body to the part in ~1 MiB chunks: the next one arrives while the writer thread stores the last (one in flight).

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
            beat(part.size)
        pending = part.submit(b"".join(pieces))
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
            # The write in flight lands before anyone reads the part's size or closes the file (even when cancelled).
            if not pending.done():
                await asyncio.wait([asyncio.wrap_future(pending)])
            if not pending.cancelled():
                pending.result()  # its error (GzipCorrupt, disk full) outranks a reset of the connection
    beat(part.size)


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


def filename_from_disposition(header: str | None) -> str | None:
    if not header:
        return None
    m = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, re.I)
    if m:
        return unquote(m.group(1).strip().strip('"'))
    m = re.search(r'filename\s*=\s*"([^"]*)"', header, re.I) or re.search(r"filename\s*=\s*([^;]+)", header, re.I)
    return m.group(1).strip() if m else None
