"""DataExportSyncWorkflow: an unattended, rate-limited, gap-free sync of legacy export bundles.

The steps: from the cursor (`start`), list bundles (20 a page, oldest first), store each one in
order (the download runs on the rate-limited downloads task queue), and only then advance the
cursor to its `Stop`. With `stop`, finish when the cursor reaches it; with `follow`, sleep
`poll_interval` when caught up and list again, forever. Continue-as-new keeps each run's history
bounded, carrying the cursor. With `load`, each stored bundle is loaded as rows (workflows/table_load.py)
before the cursor moves past it. Its input, result and start texts: data_export_input.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, VersioningBehavior
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from activities.legacy_export import (
        BundleStoreActivities,
        ExportBundle,
        LegacyExportActivities,
        StoredBundle,
        StoreExportBundleParams,
    )
    from vocabulary import errors
    from vocabulary.errors import NON_RETRYABLE
    from vocabulary.policies import HEARTBEAT_TIMEOUT, LONG_RETRY, UNATTENDED_STEP_BUDGET
    from vocabulary.table_load import window_key
    from vocabulary.texts import Row, at, code, iso, size, span
    from vocabulary.token_messages import GRANTED_SIGNAL, TokenGrant
    from workflows.data_export_input import DataExportSyncInput, DataExportSyncResult
    from workflows.download_tokens import TokenTaker
    from workflows.steps import ProgressTracker, ProgressWorkflow, parse_input, raise_activity_failure, remaining
    from workflows.table_load import check_load, load_window


BUNDLE_ATTEMPT_TIMEOUT = timedelta(hours=6)
# 2026-12: each download attempt takes a token of the durable bucket (workflows/download_tokens.py) and
# the workflow retries; runs that stored a bundle before it replay with the server-rate-limited queue's retry.
DOWNLOAD_TOKENS_PATCH = "download-tokens"
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)  # the retry is the workflow's: a new attempt takes a new token


# --- The workflow --------------------------------------------------------------------------------


@workflow.defn(name="DataExportSyncWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class DataExportSyncWorkflow(ProgressWorkflow):
    timeout_error = errors.SYNC_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.tokens = TokenTaker()

    @workflow.signal(name=GRANTED_SIGNAL)
    def download_token_granted(self, grant: TokenGrant) -> None:
        self.tokens.granted(grant)

    @workflow.run
    async def run(self, input: dict[str, Any]) -> DataExportSyncResult:
        args = parse_input(DataExportSyncInput, input)
        state = SyncState(args)
        say = SyncNarration(self._tracker, args, state)
        await self.check_locations(destination=args.destination)
        await check_load(self, args.load, "BUNDLE")

        while True:
            if args.stop is not None and state.cursor >= args.stop:
                say.done(f"Done: reached stop {iso(args.stop)}")
                return state.result()
            page = await self.list_unstored(state, say)
            if not page:
                if args.stop is not None or not args.follow:
                    say.done("Done: caught up, no more bundles")
                    return state.result()
                await self.sleep_until_next_listing(state, say)
                continue
            for i, bundle in enumerate(page, 1):
                say.storing(bundle, i, len(page))
                await self.store(bundle, state)  # only once the bundle is stored intact does the cursor move
                if args.stop is not None and state.cursor >= args.stop:
                    break
                if state.stored_this_run >= args.bundles_per_run or workflow.info().is_continue_as_new_suggested():
                    say.continuing()
                    self.continue_as_new(state)

    async def list_unstored(self, state: SyncState, say: SyncNarration) -> list[ExportBundle]:
        """The next page of bundles past the cursor (20 a page, oldest first)."""
        say.listing()
        page = await self.unattended_step(
            LegacyExportActivities.list_export_bundles,
            state.cursor,
            f"List export bundles after {iso(state.cursor)}",
        )
        return state.unstored(page)

    async def store(self, bundle: ExportBundle, state: SyncState) -> None:
        """One bundle, downloaded once a download token is granted; then the cursor moves to its end."""
        params = StoreExportBundleParams(bundle=bundle, destination=state.args.destination)
        summary = f"Store bundle {bundle.id} ({iso(bundle.start)}..{iso(bundle.stop)})"
        task_queue = BundleStoreActivities.task_queue(workflow.info().task_queue)
        if not workflow.patched(DOWNLOAD_TOKENS_PATCH):
            stored = await self.unattended_step(
                BundleStoreActivities.store_export_bundle,
                params,
                summary,
                task_queue=task_queue,
                start_to_close=BUNDLE_ATTEMPT_TIMEOUT,
                heartbeat=HEARTBEAT_TIMEOUT,
                retry=LONG_RETRY,
            )
        else:
            stored = await self.store_paced(bundle, params, summary, task_queue)
        if state.args.load is not None:  # loaded before the cursor moves: it never passes a bundle not loaded
            loaded = await load_window(
                self,
                state.args.load,
                kind="BUNDLE",
                format="FORMAT_JSON",
                file=stored.location,
                sha256=stored.sha256,
                window=window_key("bundle", bundle.id),
                window_start=datetime.fromtimestamp(bundle.start, UTC),
                window_end=datetime.fromtimestamp(bundle.stop, UTC),
            )
            state.rows += loaded.rows
        state.stored(bundle, stored)

    async def store_paced(
        self, bundle: ExportBundle, params: StoreExportBundleParams, summary: str, task_queue: str
    ) -> StoredBundle:
        """Each attempt takes a download token first (each is a fresh GET that Fullstory counts); a 429's
        Retry-After (or a short backoff) passes before the next token is asked for."""
        deadline = workflow.now() + UNATTENDED_STEP_BUDGET
        attempt = 0
        while True:
            attempt += 1
            await self.tokens.take(self, f"bundle-{bundle.id}", deadline)
            try:
                return await workflow.execute_activity_method(
                    BundleStoreActivities.store_export_bundle,
                    params,
                    # The same id every attempt: the download's part file is named by it, so a new attempt
                    # (another worker, after a kill) resumes what the last one wrote.
                    activity_id=f"store-bundle-{bundle.id}",
                    summary=summary if attempt == 1 else f"{summary}, attempt {attempt}",
                    task_queue=task_queue,
                    schedule_to_close_timeout=remaining(deadline),
                    start_to_close_timeout=BUNDLE_ATTEMPT_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=ONE_ATTEMPT,
                )
            except ActivityError as err:
                delay = retry_delay(err, attempt)
                if delay is None or workflow.now() + delay >= deadline:
                    self._tracker.set("failed", f"Failed: {summary}", waiting_until=None)
                    raise_activity_failure(
                        err,
                        timeout_message=f"{summary}: did not succeed within {UNATTENDED_STEP_BUDGET}",
                        timeout_error=self.timeout_error,
                    )
                workflow.logger.info(
                    "store bundle %s: attempt %d failed (%s); next in %s", bundle.id, attempt, err.cause, delay
                )
                await workflow.sleep(
                    delay, summary=f"{summary}: attempt {attempt} failed; next at {at(workflow.now() + delay)}"
                )

    async def sleep_until_next_listing(self, state: SyncState, say: SyncNarration) -> None:
        """Caught up: a durable timer of `poll_interval`, then list again (in a new run, if history is big)."""
        poll_interval = state.args.poll_interval
        wake = workflow.now() + poll_interval
        say.sleeping(wake)
        await workflow.sleep(poll_interval, summary=f"Caught up at {iso(state.cursor)}; list again at {at(wake)}")
        if workflow.info().is_continue_as_new_suggested():
            self.continue_as_new(state)

    def continue_as_new(self, state: SyncState) -> None:
        workflow.continue_as_new(
            state.args.model_copy(
                update={
                    "start": state.cursor,
                    "bundles_so_far": state.bundles,
                    "bytes_so_far": state.bytes,
                    **({"rows_so_far": state.rows} if state.args.load is not None else {}),
                }
            ).model_dump(mode="json")
        )


def retry_delay(err: ActivityError, attempt: int) -> timedelta | None:
    """How long before the next attempt of a failed download, or None when it must not be retried.

    A 429's (or 503's) Retry-After when the activity carried one; else LONG_RETRY's short capped backoff
    (a worker that died, a reset). Non-retryable errors and the step's own deadline are not retried.
    """
    cause = err.cause
    if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_CLOSE:
        return None
    if isinstance(cause, ApplicationError):
        if cause.non_retryable or (cause.type or "") in NON_RETRYABLE:
            return None
        if cause.next_retry_delay:
            return cause.next_retry_delay
    elif isinstance(cause, CancelledError):
        return None
    first, cap = LONG_RETRY.initial_interval, LONG_RETRY.maximum_interval or LONG_RETRY.initial_interval
    return min(cap, first * LONG_RETRY.backoff_coefficient ** (attempt - 1))


class SyncState:
    """The cursor (every bundle before it is stored) and the totals, carried across continue-as-new."""

    def __init__(self, args: DataExportSyncInput) -> None:
        self.args = args
        self.cursor, self.bundles, self.bytes = args.start, args.bundles_so_far, args.bytes_so_far
        self.rows = args.rows_so_far
        self.stored_this_run = 0

    def unstored(self, page: list[ExportBundle]) -> list[ExportBundle]:
        """The listed bundles past the cursor (and before `stop`), oldest first."""
        page = sorted((b for b in page if b.stop > self.cursor), key=lambda b: (b.stop, b.start))
        return [b for b in page if b.start < self.args.stop] if self.args.stop is not None else page

    def stored(self, bundle: ExportBundle, stored: StoredBundle) -> None:
        self.cursor = bundle.stop
        self.bundles += 1
        self.bytes += stored.bytes
        self.stored_this_run += 1

    def result(self) -> DataExportSyncResult:
        return DataExportSyncResult(
            cursor=self.cursor,
            cursor_iso=iso(self.cursor),
            bundles=self.bundles,
            bytes=self.bytes,
            rows_loaded=self.rows,
        )


# --- What the UI says ----------------------------------------------------------------------------


class SyncNarration:
    def __init__(self, tracker: ProgressTracker, args: DataExportSyncInput, state: SyncState) -> None:
        self.track, self.args, self.state = tracker.set, args, state

    def status(self, phase: str, headline: str, *rows: Row, **fields: Any) -> None:
        args, s = self.args, self.state
        self.track(
            phase,
            headline,
            [
                *rows,
                ("Cursor", f"{iso(s.cursor)} (`{s.cursor}`): every bundle before it is stored"),
                (
                    "Stored",
                    f"{s.bundles:,} bundles, {size(s.bytes)}"
                    + (f" ({s.stored_this_run:,} in this run)" if s.bundles != s.stored_this_run else ""),
                ),
                ("Loaded", f"{s.rows:,} rows into {code(args.load.describe('BUNDLE'))}" if args.load else ""),
                (
                    "Mode",
                    f"follow: list again every {span(args.poll_interval)} when caught up"
                    if args.follow
                    else f"until {iso(args.stop)}"
                    if args.stop is not None
                    else "until caught up",
                ),
            ],
            cursor=s.cursor,
            cursor_iso=iso(s.cursor),
            records=s.bundles,
            bytes=s.bytes,
            **fields,
        )

    def done(self, headline: str) -> None:
        self.status("done", headline)

    def listing(self) -> None:
        self.status("listing", f"Listing export bundles after {iso(self.state.cursor)}")

    def sleeping(self, wake: datetime) -> None:
        self.status(
            "sleeping",
            f"Caught up; next listing at {at(wake)}",
            ("Next listing", f"{at(wake)} (a durable timer of {span(self.args.poll_interval)})"),
            waiting_until=wake,
        )

    def storing(self, bundle: ExportBundle, i: int, n: int) -> None:
        self.status(
            "downloading",
            f"Storing bundle {code(bundle.id)}",
            ("Bundle", f"{iso(bundle.start)} → {iso(bundle.stop)}"),
            (
                "Pace",
                (
                    "downloads are rate limited across all workers; a wait here is the limit, not "
                    "a fault (*Pending Activities* tab shows the attempt and the bytes so far)"
                ),
            ),
            ("Page", f"{i} of {n} listed"),
        )

    def continuing(self) -> None:
        self.status("continuing", "Continuing as new to keep history small")
