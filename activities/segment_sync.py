"""Segment export sync activities: where a sync's files go, and its manifest.

The files themselves are downloaded by each window's child `SegmentExportWorkflow` (download.py);
these activities only place them and keep `manifest.ndjson` beside them
(`<destination>/<segment_id>/<type>/`): one JSON line per window, sorted by window start, written
only after the window's file is published complete (activities/manifest.py: replaced whole,
atomically, locally and in object stores). A window listed there is complete and final.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import BaseModel
from temporalio import activity

from activities.deps import ActivityDeps
from activities.locations import Locations, safe_name
from activities.manifest import ManifestFile

MANIFEST = "manifest.ndjson"


class ManifestEntry(BaseModel):
    """One line of the manifest: a window whose file is published complete."""

    window_start: datetime
    window_end: datetime
    file: str
    location: str
    bytes: int
    sha256: str
    operation_id: str
    finished_at: datetime
    table: str | None = None  # with `load`: where its rows are (`duckdb fullstory.events`), and how many
    rows: int | None = None

    def line(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), separators=(",", ":"), sort_keys=True)


class SyncPlaceParams(BaseModel):
    destination: str | None = None
    segment_id: str
    type: str
    since: datetime  # report windows listed from here...
    until: datetime  # ...to here
    load_table: str | None = None  # with `load`: only windows listed as loaded there count as done


class SyncPlace(BaseModel):
    files_location: str  # the children's destination: <destination>/<segment_id>/<type>
    manifest_location: str
    listed: list[datetime]  # window starts in [since, until) already in the manifest: complete, not exported again


class RecordWindowsParams(BaseModel):
    destination: str | None = None
    segment_id: str
    type: str
    entries: list[ManifestEntry]  # the new one, plus a few recent ones (heals a lost update)


def files_location(locations: Locations, destination: str | None, segment_id: str, type_: str) -> str:
    """`<destination>/<segment_id>/<type>`, the destination resolved (None: FULLSTORY_DATA_DIR)."""
    dest = locations.destination(destination)
    base = dest.remote if dest.remote is not None else str(dest.local)
    return f"{base.rstrip('/')}/{safe_name(segment_id)}/{safe_name(type_)}"


def parse_manifest(text: str | None) -> dict[datetime, ManifestEntry]:
    entries: dict[datetime, ManifestEntry] = {}
    for line in (text or "").splitlines():
        if line.strip():
            try:
                entry = ManifestEntry.model_validate_json(line)
            except ValueError:
                activity.logger.warning("manifest line is unreadable; ignored: %.200s", line)
                continue
            entries[entry.window_start.astimezone(UTC)] = entry
    return entries


class SegmentSyncActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.locations = deps.locations

    def _manifest(self, destination: str | None, segment_id: str, type_: str) -> tuple[str, ManifestFile]:
        where = files_location(self.locations, destination, segment_id, type_)
        return where, ManifestFile(self.locations.destination(where), MANIFEST)

    @activity.defn(name="segment_sync_place")
    async def segment_sync_place(self, params: SyncPlaceParams) -> SyncPlace:
        """Where the files go, and the windows from `since` the manifest lists (a restarted sync skips them)."""
        where, manifest = self._manifest(params.destination, params.segment_id, params.type)
        listed = [
            start
            for start, entry in parse_manifest(manifest.read()).items()
            if params.since <= start < params.until
            and manifest.size_of(entry.file) == entry.bytes
            and (params.load_table is None or entry.table == params.load_table)
        ]
        return SyncPlace(files_location=where, manifest_location=manifest.location, listed=sorted(listed))

    @activity.defn(name="segment_sync_record_windows")
    async def segment_sync_record_windows(self, params: RecordWindowsParams) -> str:
        """Add windows whose files are published to the manifest (idempotent: a window is one line)."""
        _, manifest = self._manifest(params.destination, params.segment_id, params.type)
        entries = parse_manifest(manifest.read())
        before = dict(entries)
        for entry in params.entries:
            entries[entry.window_start.astimezone(UTC)] = entry
        if entries != before:
            manifest.write("".join(entries[k].line() + "\n" for k in sorted(entries)))
        return manifest.location
