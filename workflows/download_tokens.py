"""DownloadTokensWorkflow: the download limit, a durable token bucket held across every workflow and worker.

Fullstory allows 2 legacy bundle downloads a minute per org. Temporal's own task-queue rate limit
(`max_task_queue_activities_per_second`) is split between a queue's partitions, 4 on a default cluster
and on Temporal Cloud, and one sequential sync sees one partition's share (measured: starts 36-40 s
apart at 6/min instead of 10 s); fixing that needs server-side dynamic config people cannot set. So
the limit lives in a workflow, beside the batch-slot semaphore (workflows/org_batch_limit.py) and built
the same way: one bucket per API key and task queue (fixed id, activities/download_tokens.py), started
on demand by the first request (signal-with-start), ending when idle and full again.

- `request_token` (TokenRequest): queue the request, first come first served; a token is granted by
  signalling `download_token_granted` (TokenGrant) to the requester. Repeating a request is harmless:
  one waiting keeps its place, one already granted is sent its grant again, never charged twice.
- The pace: GCRA (a token bucket kept as one time, `tat`): a token every 60/`per_minute` s, at most
  `burst` (1 by default, at most 2) at once after an idle spell. Durable timers, workflow time only.
- A token is spent per download *attempt* (the requester takes a new one before a retry), since every
  attempt is a fresh GET that Fullstory counts. A grant whose requester no longer runs is refunded
  (it cannot have been used). The bucket state (tat, queue, last grant per requester) is workflow
  state: a worker SIGKILL or a server restart loses no token and spends none twice.
- Bounded: continues as new (state carried over) when its history grows; with nobody waiting it ends
  once the bucket is full again (so a fresh start is the same bucket), and the next request starts it.
- The UI: current details show the rate, the queue and the next token's time; so does `progress`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.download_tokens import DownloadTokenActivities
    from vocabulary import errors
    from vocabulary.contract import ResultModel
    from vocabulary.policies import CALL_RETRY, CALL_TIMEOUT
    from vocabulary.texts import Row, at, code, span
    from vocabulary.token_messages import (
        GRANTED_SIGNAL,
        MAX_BURST,
        REQUEST_SIGNAL,
        TOKENS_WORKFLOW,
        DownloadTokensInput,
        RequestTokenParams,
        TokenGrant,
        TokenRequest,
        tokens_summary,
    )
    from workflows.steps import ProgressTracker, ProgressWorkflow, parse_input, raise_activity_failure, remaining

MAX_HISTORY = 4_000  # events before it continues as new
MAX_REMEMBERED = 1_000  # last grants remembered (one per requester run), to answer a repeated request
REREQUEST_EVERY = timedelta(minutes=5)  # a waiting requester asks again (its request or grant may be lost)
MIN_WAIT = timedelta(milliseconds=10)
# Idle this long (and full) before it ends: a sync asks every few seconds to minutes, and one execution
# serving them all is cheaper than one started per token (each start is a new run and its history).
IDLE_LINGER = timedelta(minutes=2)


class DownloadTokensResult(ResultModel):
    granted_total: int


HIDDEN_FIELDS = frozenset({"tat", "waiting", "granted", "granted_total"})


def workflow_id_for(args: DownloadTokensInput, unique: str) -> str:
    return f"fullstory-download-tokens-{unique}"  # the real id derives from the API key (activities/download_tokens.py)


def requester(r: TokenRequest) -> str:
    return f"{r.holder}/{r.run_id}"


class Gcra:
    """The bucket's arithmetic, kept apart from Temporal so it is checked on its own (tests/test_download_tokens.py).

    `tat` is the time the bucket is full again; a token is free at `now` when `tat - (burst - 1) * interval <= now`.
    """

    def __init__(self, per_minute: float, burst: int, tat: datetime | None = None) -> None:
        self.per_minute, self.burst, self.tat = per_minute, min(max(burst, 1), MAX_BURST), tat

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=60.0 / self.per_minute)

    def next_free(self, now: datetime) -> datetime:
        """The earliest time a token is free (`now` or later)."""
        if self.tat is None:
            return now
        return max(now, self.tat - (self.burst - 1) * self.interval)

    def take(self, now: datetime) -> bool:
        if self.next_free(now) > now:
            return False
        self.tat = max(self.tat or now, now) + self.interval
        return True

    def refund(self) -> None:
        if self.tat is not None:
            self.tat -= self.interval

    def full(self, now: datetime) -> bool:
        return self.tat is None or self.tat <= now


@workflow.defn(name=TOKENS_WORKFLOW, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class DownloadTokensWorkflow(ProgressWorkflow):
    timeout_error = errors.SYNC_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.per_minute: float | None = None  # set by a request (the latest wins) or the input
        self.burst: int | None = None
        self.waiting: list[TokenRequest] = []
        self.regrant: list[TokenRequest] = []
        self.granted: dict[str, str] = {}  # requester -> its last request granted
        self.grant_times: dict[str, datetime] = {}  # request id -> when (this run only; for a repeated grant)
        self.granted_total = 0
        self.changed = False
        self.last_request = workflow.now()

    @workflow.signal(name=REQUEST_SIGNAL)
    def request(self, r: TokenRequest) -> None:
        self.last_request = workflow.now()
        if r.per_minute:
            self.per_minute = r.per_minute
        if r.burst:
            self.burst = r.burst
        who = requester(r)
        if self.granted.get(who) == r.request_id:
            self.regrant.append(r)
        elif not any(requester(w) == who and w.request_id == r.request_id for w in self.waiting):
            # One request at a time per requester: an older one of the same workflow (an earlier run, an
            # earlier attempt) is superseded; a repeated one keeps its place in the queue.
            self.waiting = [w for w in self.waiting if w.holder != r.holder]
            self.waiting.append(r)
        self.changed = True

    @workflow.run
    async def run(self, input: dict[str, Any]) -> DownloadTokensResult:
        args = parse_input(DownloadTokensInput, input)
        # Requests that arrived with the start (signal-with-start) ran before run(): keep what they set.
        bucket = Gcra(self.per_minute or args.per_minute, self.burst or args.burst, args.tat)
        self.granted = {**args.granted, **self.granted}
        known = {(requester(w), w.request_id) for w in args.waiting}
        self.waiting = [*args.waiting, *(w for w in self.waiting if (requester(w), w.request_id) not in known)]
        self.granted_total += args.granted_total
        say = TokensNarration(self._tracker)
        while True:
            bucket.per_minute = self.per_minute or bucket.per_minute
            bucket.burst = min(self.burst or bucket.burst, MAX_BURST)
            await self.grant(bucket)
            now = workflow.now()
            say.now(self, bucket, now)
            if workflow.info().get_current_history_length() > MAX_HISTORY or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    DownloadTokensInput(
                        per_minute=bucket.per_minute,
                        burst=bucket.burst,
                        tat=bucket.tat,
                        waiting=self.waiting,
                        granted=self.granted,
                        granted_total=self.granted_total,
                    )
                )
            self.changed = False
            if self.waiting:
                await self.wait(bucket.next_free(now) - now)
            elif not bucket.full(now) or now < self.last_request + IDLE_LINGER:
                await self.wait(max(bucket.tat or now, self.last_request + IDLE_LINGER) - now)
            else:
                # Idle and full: end (a fresh start is the same bucket); the next request starts it again.
                # A signal that arrives meanwhile makes the server refuse the completion and replay it.
                await workflow.wait_condition(workflow.all_handlers_finished)
                return DownloadTokensResult(granted_total=self.granted_total)

    async def wait(self, timeout: timedelta) -> None:
        try:
            await workflow.wait_condition(lambda: self.changed, timeout=max(timeout, MIN_WAIT))
        except TimeoutError:
            pass

    async def grant(self, bucket: Gcra) -> None:
        now = workflow.now()
        fresh: list[TokenRequest] = []
        while self.waiting and bucket.take(now):
            r = self.waiting.pop(0)
            who = requester(r)
            self.granted.pop(who, None)
            self.granted[who] = r.request_id  # re-inserted: the oldest are forgotten first
            self.grant_times[r.request_id] = now
            fresh.append(r)
            self.granted_total += 1
        while len(self.granted) > MAX_REMEMBERED:
            del self.granted[next(iter(self.granted))]
        again, self.regrant = self.regrant, []
        if fresh or again:
            await asyncio.gather(
                *(self.signal_grant(r, bucket, now, refund=True) for r in fresh),
                *(self.signal_grant(r, bucket, self.grant_times.get(r.request_id, now), refund=False) for r in again),
            )

    async def signal_grant(self, r: TokenRequest, bucket: Gcra, granted_at: datetime, *, refund: bool) -> None:
        try:
            await workflow.get_external_workflow_handle(r.holder, run_id=r.run_id).signal(
                GRANTED_SIGNAL, TokenGrant(request_id=r.request_id, granted_at=granted_at)
            )
        except Exception:  # the requester no longer runs: it never used the token
            if refund and self.granted.get(requester(r)) == r.request_id:
                del self.granted[requester(r)]
                bucket.refund()
                self.changed = True


class TokensNarration:
    def __init__(self, tracker: ProgressTracker) -> None:
        self.track = tracker.set

    def now(self, tokens: DownloadTokensWorkflow, bucket: Gcra, now: datetime) -> None:
        nxt = bucket.next_free(now)
        rows: list[Row] = [
            (
                "Rate",
                f"{bucket.per_minute:g} a minute (FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE), one every "
                f"{span(bucket.interval)}, at most {bucket.burst} at once; one token per download attempt",
            ),
            (
                "Waiting",
                f"{len(tokens.waiting)}: " + ", ".join(code(w.holder, 60) for w in tokens.waiting[:5])
                if tokens.waiting
                else "nobody",
            ),
            ("Next token", "now" if nxt <= now else at(nxt)),
            ("Granted so far", f"{tokens.granted_total:,}"),
        ]
        self.track(
            "waiting" if tokens.waiting else "idle",
            f"{len(tokens.waiting)} waiting for a download token; next at {'now' if nxt <= now else at(nxt)}",
            rows,
            records=tokens.granted_total,
            waiting_until=nxt if tokens.waiting and nxt > now else None,
        )


def start_texts(args: DownloadTokensInput) -> tuple[str, str, list[Row]]:
    return (
        tokens_summary(args.per_minute),
        "Download tokens (FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE)",
        [("Rate", f"{args.per_minute:g} a minute"), ("Burst", str(args.burst))],
    )


# --- The requester's side (DataExportSyncWorkflow) -----------------------------------------------------


class TokenTaker:
    """Takes one download token per download attempt. Use in a workflow that defines a
    `download_token_granted` signal calling `granted(grant)`."""

    def __init__(self) -> None:
        self.awaiting: str | None = None
        self.grant: TokenGrant | None = None
        self.seq = 0

    def granted(self, grant: TokenGrant) -> None:
        if grant.request_id == self.awaiting:
            self.grant = grant

    async def take(self, owner: ProgressWorkflow, what: str, deadline: datetime) -> TokenGrant:
        info = workflow.info()
        self.seq += 1
        self.awaiting, self.grant = f"{what}#{self.seq}", None
        params = RequestTokenParams(holder=info.workflow_id, run_id=info.run_id, request_id=self.awaiting)
        summary = "Ask for a download token (FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE, across all workers)"
        while self.grant is None:
            # A local activity: one marker in history, not three events and a workflow task (it is one short call).
            try:
                await workflow.execute_local_activity_method(
                    DownloadTokenActivities.request_download_token,
                    params,
                    summary=summary,
                    schedule_to_close_timeout=remaining(deadline),
                    start_to_close_timeout=CALL_TIMEOUT,
                    retry_policy=CALL_RETRY,
                )
            except ActivityError as err:
                raise_activity_failure(
                    err,
                    timeout_message="asking for a download token did not succeed in time",
                    timeout_error=owner.timeout_error,
                )
            try:
                await workflow.wait_condition(
                    lambda: self.grant is not None, timeout=min(REREQUEST_EVERY, remaining(deadline))
                )
            except TimeoutError:
                if workflow.now() >= deadline:
                    raise owner.timeout_error("no download token was granted before the deadline") from None
        grant, self.awaiting, self.grant = self.grant, None, None
        return grant
