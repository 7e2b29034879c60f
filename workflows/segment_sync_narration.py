"""What a segment export sync says while it runs: the UI's current details and the `progress` answer.

One status, drawn from the window bookkeeping (`SyncState`, segment_windows.py): the cursor, the
windows exported, in flight and failed, the next window due, paused or not. The sync's static texts
(`start_texts`) and its input are in segment_sync_input.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vocabulary.texts import Row, at, code, escape, iso, location, shorten, size
    from workflows.segment_windows import SyncState
    from workflows.steps import ProgressTracker


class SegmentSyncNarration:
    """The UI's current details and the `progress` answer of one run, from its `SyncState`.

    `mode` (how long the sync runs) and `destination` come from the input, which never changes in a run.
    """

    def __init__(
        self,
        tracker: ProgressTracker,
        state: SyncState,
        paused: Callable[[], bool],
        *,
        mode: str,
        destination: str | None,
        load_to: str | None = None,
    ) -> None:
        self.track, self.state, self.paused = tracker.set, state, paused
        self.mode, self.destination, self.load_to = mode, destination, load_to

    def _emit(self, phase: str, headline: str, *rows: Row, next_due: datetime | None = None) -> None:
        s = self.state
        in_flight = sorted(s.in_flight)
        self.track(
            phase,
            headline,
            [
                *rows,
                (
                    "Cursor",
                    f"{iso(s.cursor)}: every window before it is exported"
                    + (", loaded" if self.load_to else "")
                    + " and listed in the manifest",
                ),
                (
                    "Windows",
                    f"{s.windows:,} exported ({size(s.bytes)})"
                    + (f", {s.skipped:,} already listed" if s.skipped else "")
                    + (f"; in flight: {', '.join(iso(t) for t in in_flight)}" if in_flight else ""),
                ),
                (
                    "Loaded",
                    f"{s.rows:,} rows into {code(self.load_to)}; {s.loaded:,} windows in this run, each exactly once"
                    if self.load_to
                    else "",
                ),
                ("Failed attempts", escape(shorten("; ".join(s.failed_attempts[-3:]), 300))),
                ("Next window due", f"{iso(s.next_start)} at {at(next_due)}" if next_due else ""),
                ("Mode", self.mode),
                ("Files to", code(s.files_location, 120) if s.files_location else location(self.destination)),
            ],
            cursor=int(s.cursor.timestamp()),
            cursor_iso=iso(s.cursor),
            records=s.windows,
            bytes=s.bytes,
            waiting_until=next_due,
            windows_done=s.windows,
            windows_skipped=s.skipped,
            windows_in_flight=[iso(t) for t in in_flight],
            windows_failed=list(s.failed_attempts[-20:]),
            next_window_due_at=next_due,
            paused=self.paused(),
            manifest_location=s.manifest_location or None,
            windows_loaded=s.loaded,
            rows_loaded=s.rows,
            table=self.load_to,
        )

    def status(self, wake: datetime | None) -> None:
        s = self.state
        if self.paused():
            n = len(s.in_flight)
            self.track_paused(n)
        elif s.in_flight:
            self._emit("exporting", f"Exporting {len(s.in_flight)} window(s)", next_due=wake)
        elif wake is not None:
            self._emit("sleeping", f"Caught up; next window due at {at(wake)}", next_due=wake)
        else:
            self._emit("running", "Running")

    def track_paused(self, in_flight: int) -> None:
        self._emit(
            "paused",
            "Paused: " + (f"finishing {in_flight} window(s) in flight, " if in_flight else "") + "starting no new one",
            ("Resume", "`fullstory-jobs resume <workflow id>` (the `resume` Update)"),
        )

    def done(self, headline: str) -> None:
        self._emit("done", headline)

    def continuing(self) -> None:
        self._emit("continuing", "Continuing as new to keep history small")

    def failed(self, start: datetime, why: str) -> None:
        self._emit("failed", f"Failed at window {iso(start)}: {escape(shorten(why, 200))}")
