"""The one download activity, shared by segment exports and legacy bundles.

A download is three pieces, each in its own module:
- download_sources.py: where the bytes come from (search export, operation, legacy bundle, URL) and a
  URL for them, fetched anew when a signed one expires;
- download_stream.py: the GETs, with `Range: bytes=N-` from the part's end, retries within the attempt
  from the current offset, and heartbeats of the bytes on disk;
- download_sink.py: the part file and its journal (what a new attempt resumes from), the hash and the
  gzip check, then fsync + atomic rename: a file under its final name is always complete, and never
  replaces a different one.
This module holds the activity: its params and result, the part's name, and publishing the file.
Storage hosts never get the Fullstory Authorization header; signed URLs are logged and reported
without their query string.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from temporalio import activity

from activities.deps import ActivityDeps
from activities.download_sink import DownloadCursor, commit_part, resume_point, sanitize_filename, writing_part
from activities.download_sources import DownloadSource, Locator
from activities.download_stream import Stream, Throttled
from activities.fullstory_client import FullstoryClient
from activities.heartbeat import Heartbeater, resume_details
from activities.locations import Destination, safe_name


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


class DownloadActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.downloader = Downloader(deps.client)
        self.locations = deps.locations

    @activity.defn(name="download_to_destination")
    async def download_to_destination(self, params: DownloadParams) -> DownloadResult:
        return await self.downloader.download_into(self.locations.destination(params.destination), params)


class Downloader:
    """The download itself, shared by the export and bundle activities (activities/legacy_export.py)."""

    def __init__(self, client: FullstoryClient) -> None:
        self.client = client

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
        beat = Throttled(heartbeat)
        beat(keep, force=True)  # re-hashing a big kept part takes a while: keep the resume point meanwhile
        source = params.source
        async with writing_part(part, keep, params.verify_gzip, source.describe()) as written:
            locator = Locator(self.client, source)
            served = await Stream(self.client, locator, await locator.locate(), written, beat).run()
        sink = written.sink
        wanted = sanitize_filename(params.filename or served.filename, source.default_filename())
        final = await asyncio.to_thread(
            commit_part,
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
            content_type=served.content_type,
            filename=final.name,
        )


__all__ = ["DownloadActivities", "Downloader", "DownloadParams", "DownloadResult", "resume_point", "sanitize_filename"]
