"""What BulkImportWorkflow (workflows/bulk_import.py) says in the UI and its `progress` query, step by step."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, code, location, plain, shorten, span
    from workflows.bulk_import_input import BulkImportInput, BulkImportResult, BulkProgress
    from workflows.steps import ProgressTracker, StepText


class BulkNarration:
    def __init__(
        self, tracker: ProgressTracker, args: BulkImportInput, state: BulkProgress, batches_per_run: int
    ) -> None:
        self.track, self.args, self.state = tracker.set, args, state
        self.batches_per_run = batches_per_run
        self.deadline_row: Row = ("Deadline", at(state.deadline))

    def staging(self) -> None:
        self.track(
            "staging",
            f"Staging the {self.args.kind} in {location(self.args.source)} in chunks of {self.args.batch_size:,}",
            [
                ("How", "the source is read once, every item checked; no batch is created before it all is"),
                ("Chunks to", location(self.args.destination)),
                self.deadline_row,
            ],
        )

    def stage_step(self) -> StepText:
        return StepText(
            f"Stage {self.args.source} in chunks of {self.args.batch_size:,} (items so far: the heartbeat)",
            f"staging {self.args.source} did not finish in time",
        )

    def running(self, in_flight: int, holding: int) -> None:
        s, staged = self.state, self.state.staged
        assert staged is not None
        finished = s.done
        top = sorted(s.error_codes.items(), key=lambda kv: -kv[1])[:5]
        waiting = in_flight - holding
        self.track(
            "running",
            f"Bulk {self.args.kind} import: {finished:,} of {staged.batches:,} batches finished, "
            f"{holding} running at Fullstory, {waiting} waiting for a batch slot",
            [
                ("Staged", f"{staged.batches:,} batches, {staged.items:,} items"),
                ("Running at Fullstory", f"{holding} (each holds an org batch slot)"),
                (
                    "Waiting for a slot",
                    f"{waiting} (FULLSTORY_MAX_BATCHES_IN_PROGRESS, shared by every import of this API key)",
                ),
                ("Started", f"{in_flight} at once at most {self.args.max_in_flight} (max_in_flight)"),
                ("Finished", f"{s.done:,} ({s.failed:,} with failed items or failed)"),
                ("Items so far", f"{s.imports:,} imported, {s.errors:,} failed"),
                ("Error codes", ", ".join(f"{code(c, 40)} × {n:,}" for c, n in top)),
                ("Waiting for", "the next batch to finish" if in_flight else "nothing"),
                ("Run", f"{s.runs} (continues as new every {self.batches_per_run} batches)"),
                self.deadline_row,
            ],
            records=s.imports + s.errors,
            percent=round(100.0 * finished / max(staged.batches, 1), 1),
            holding_slot=holding,
            waiting_for_slot=waiting,
        )

    def continuing(self) -> None:
        self.track("continuing", "Continuing as new with the counts so far (keeps history bounded)")

    def merging(self) -> None:
        self.track(
            "merging",
            "Merging every batch's error records into one NDJSON (each with its batch and source line)",
            [("To", location(self.args.destination))],
        )

    def done(self, result: BulkImportResult) -> None:
        self.track(
            "done",
            f"Done: bulk {self.args.kind} import {result.status}: {result.batches:,} batches, "
            f"{result.imports:,} imported, {result.errors:,} failed",
            [
                ("Errors at", code(result.errors_location, 120) if result.errors_location else ""),
                ("Batches at", code(result.batches_location, 120) if result.batches_location else ""),
                ("Imports at", code(result.imports_location, 120) if result.imports_location else ""),
            ],
            records=result.records_collected,
            percent=100.0,
            status=result.status,
        )


def start_texts(args: BulkImportInput) -> tuple[str, str, list[Row]]:
    kind = args.kind.capitalize()
    rows: list[Row] = [
        ("Source", location(args.source)),
        ("Batches", f"{args.batch_size:,} items each, at most {args.max_in_flight} in progress"),
        ("Shared", f"{len(args.shared)} field(s) sent with every batch (values not shown)" if args.shared else ""),
        ("Reports to", f"{location(args.destination)}: errors.ndjson (with batch and line), batches.ndjson"),
        ("Deadline", f"{span(args.timeout)} after start"),
        ("Steps", "stage the source in chunks → one child batch import per chunk → merge the error records"),
        LIVE_STATUS_ROW,
    ]
    src = shorten(plain(location(args.source, 200)), 80)
    return f"{kind} bulk import from {src}", f"{kind} bulk import", rows
