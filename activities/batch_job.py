"""Batch import activities and their params, one generic path for `events` and `users`.

- `create_batch_job`: POST the requests with an Idempotency-Key.
- `wait_for_batch_job`: one status check per attempt; "still processing" is a
  benign retryable error whose `next_retry_delay` is the server's Retry-After
  or the poll backoff, so the wait is a durable server-side timer.
- `collect_batch_records`: walk `/errors` or `/imports` pages into NDJSON;
  after each whole page, a line in the part's journal (journal.py) records
  `(page_token, records, bytes)`: a new attempt resumes after the last page
  on disk, not after the last heartbeat (which only shows progress).

Fullstory's payloads (`BatchJob`, `BatchJobDetails`, `RecordsPage`) are tolerant:
unknown fields are ignored, optional ones may be absent.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from temporalio import activity

from activities.deps import ActivityDeps
from activities.fullstory_client import malformed_error, next_check_text
from activities.heartbeat import Heartbeater, resume_details
from activities.journal import Journal
from activities.locations import PartFile, Source, safe_name
from activities.request_items import load_requests_file, staged_lines  # NDJSON/JSON array, gzip or not
from vocabulary import errors
from vocabulary.contract import BatchJobStatus, BatchKind
from vocabulary.policies import poll_delay, poll_delay_expecting

# --- Fullstory's payloads --------------------------------------------------------------------------


class FullstoryPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class BatchJob(FullstoryPayload):
    id: str
    status: BatchJobStatus
    created: datetime | None = None
    finished: datetime | None = None


class BatchJobDetails(FullstoryPayload):
    """`GET /v2/{kind}/batch/{id}`: `errors` is absent unless the job failed."""

    imports: int = 0
    errors: int = 0
    job: BatchJob

    @field_validator("imports", "errors", mode="before")
    @classmethod
    def _int_or_zero(cls, v: Any) -> int:
        return 0 if v in (None, "") else int(v)


class CreateBatchJobResponse(FullstoryPayload):
    job: BatchJob


class RecordsPage(FullstoryPayload):
    """One page of `/errors` or `/imports`: `total_records` is a string in the docs."""

    results: list[dict[str, Any]] = Field(default_factory=list)
    total_records: int | None = None
    next_page_token: str | None = None

    @field_validator("total_records", mode="before")
    @classmethod
    def _count(cls, v: Any) -> int | None:
        return None if v in (None, "") else int(v)


# --- Params and results ----------------------------------------------------------------------------


class CreateBatchJobParams(BaseModel):
    kind: BatchKind
    requests: list[dict[str, Any]] | None = None
    requests_url: str | None = None
    shared: dict[str, Any] | None = None
    idempotency_key: str


class WaitForBatchJobParams(BaseModel):
    kind: BatchKind
    job_id: str
    max_poll_seconds: float = 60.0
    expected_seconds: float | None = None  # how long the job should take (a bulk import's earlier batches)


class CollectBatchRecordsParams(BaseModel):
    kind: BatchKind
    job_id: str
    which: Literal["errors", "imports"]
    destination: str | None = None


class CollectedRecords(BaseModel):
    location: str
    records: int
    bytes: int
    codes: dict[str, int] = Field(default_factory=dict)
    pages: int = 0
    total_records_reported: int | None = None


class CollectCursor(BaseModel):
    """State of `collect_batch_records` after a whole page: the next page to fetch and what is on disk.

    Journaled beside the part after each page (the truth a new attempt resumes from) and heartbeated.
    """

    page_token: str | None = None
    records: int = 0
    bytes: int = 0
    pages: int = 0
    done: bool = False


def batch_records_path(root: Path, kind: str, job_id: str, which: str) -> Path:
    return root / f"batch-{kind}-{safe_name(job_id)}" / f"{which}.ndjson"


def _job_path(kind: str, job_id: str) -> str:
    return f"/v2/{kind}/batch/{quote(job_id, safe='')}"


def next_poll(job: BatchJob, attempt: int, cap: timedelta, expected: timedelta | None = None) -> timedelta:
    """When to check a PROCESSING job again: by its age when Fullstory says when it was created (its end is
    then seen within max(2 s, 10 % of its age), and just after its `expected` length), else by the number
    of checks so far."""
    if job.created is None:
        return poll_delay(attempt, cap)
    created = job.created if job.created.tzinfo else job.created.replace(tzinfo=UTC)
    # "Now" is the server's time of this attempt: the worker's clock may be off (and a test server skips time).
    # Its start, not its scheduling: a retry may be scheduled when the last attempt failed, a whole gap ago.
    info = activity.info()
    now = max(info.current_attempt_scheduled_time, info.started_time)
    return poll_delay_expecting(now - created, cap, expected)


class BatchActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client = deps.client
        self.locations = deps.locations

    @activity.defn(name="create_batch_job")
    async def create_batch_job(self, params: CreateBatchJobParams) -> BatchJob:
        # Heartbeats while it reads the file and uploads up to 50,000 items: a worker killed here is
        # noticed within the heartbeat timeout, not after the 3-minute start-to-close.
        async with Heartbeater():
            return await self._create_batch_job(params)

    async def _create_batch_job(self, params: CreateBatchJobParams) -> BatchJob:
        count, body = await asyncio.to_thread(self._create_body, params)
        what = f"create {params.kind} batch job ({count} requests)"
        headers = {"Idempotency-Key": params.idempotency_key}
        if isinstance(body, Source):
            headers["Content-Length"] = str(await asyncio.to_thread(body.size))
        response = await self.client.call(
            "POST",
            f"/v2/{params.kind}/batch",
            what=what,
            content=body.pieces() if isinstance(body, Source) else body,
            headers=headers,
        )
        try:
            job = CreateBatchJobResponse.model_validate(response.body).job
        except ValidationError:
            raise malformed_error(what, "the response has no job id") from None
        activity.logger.info("created %s batch job %s", params.kind, job.id)
        return job

    def _create_body(self, params: CreateBatchJobParams) -> tuple[int, bytes | Source]:
        """(how many requests, the create's JSON body). A bulk import's staged chunk IS that body: streamed
        from the file as it is, never parsed into objects nor held whole (flat memory whatever
        max_in_flight, and the same bytes after any crash)."""
        if params.requests_url and (lines := staged_lines(self.locations, params.requests_url)) is not None:
            return len(lines), self.locations.source(params.requests_url, "requests_url")
        requests, shared = params.requests, params.shared
        if params.requests_url:
            requests, shared = load_requests_file(self.locations, params.requests_url)
        if shared is not None and params.kind != "events":
            raise errors.INVALID_INPUT("shared is only allowed for events batches")
        body: dict[str, Any] = {"requests": requests}
        if shared is not None:
            body["shared"] = shared
        return len(requests or []), json.dumps(body, separators=(",", ":")).encode()

    @activity.defn(name="wait_for_batch_job")
    async def wait_for_batch_job(self, params: WaitForBatchJobParams) -> BatchJobDetails:
        what = f"get {params.kind} batch job {params.job_id}"
        response = await self.client.call("GET", _job_path(params.kind, params.job_id), what=what)
        try:
            details = BatchJobDetails.model_validate(response.body)
        except ValidationError:
            raise malformed_error(what, "the response is not a batch job status") from None
        if details.job.status == "PROCESSING":
            attempt = activity.info().attempt
            expected = timedelta(seconds=params.expected_seconds) if params.expected_seconds else None
            cap = timedelta(seconds=params.max_poll_seconds)
            delay = response.retry_after or next_poll(details.job, attempt, cap, expected)
            raise errors.BATCH_JOB_NOT_FINISHED(
                f"{params.kind} batch job {params.job_id} is still PROCESSING "
                f"(check {attempt}); {next_check_text(delay)}",
                {"status": "PROCESSING", "attempt": attempt, "next_check_seconds": delay.total_seconds()},
                next_retry_delay=delay,
            )
        return details

    @activity.defn(name="collect_batch_records")
    async def collect_batch_records(self, params: CollectBatchRecordsParams) -> CollectedRecords:
        dest = self.locations.destination(params.destination)
        final = batch_records_path(dest.local, params.kind, params.job_id, params.which)
        part = PartFile(final)
        journal = Journal(part.part)
        if final.exists() and not part.part.exists():
            # A previous attempt finished and renamed, but its completion was lost: report what is there.
            journal.remove()
            with final.open("rb") as fh:
                records, codes = _count_lines(fh)
            size = final.stat().st_size
            return CollectedRecords(location=await dest.publish(final), records=records, bytes=size, codes=dict(codes))

        await asyncio.to_thread(journal.lock)  # an earlier attempt may live on: it stops at its next heartbeat
        try:
            return await self._collect(params, dest, final, part, journal)
        finally:
            journal.unlock()

    def _resume(
        self, params: CollectBatchRecordsParams, part: PartFile, journal: Journal
    ) -> tuple[CollectCursor, Counter[str]]:
        """Where to go on: the journal's last whole page if the part holds exactly it, else from the start."""
        found = journal.trusted()
        if found is not None:  # the last whole page on disk (in this boot; else the last fsynced one)
            fields = CollectCursor.model_fields
            cursor = CollectCursor.model_validate({k: v for k, v in found[0].items() if k in fields})
        else:  # no journal: a fresh walk, or a part left by an older version (its heartbeat says how far)
            cursor = resume_details(CollectCursor) or CollectCursor()
        kept = part.open(cursor.bytes)
        codes: Counter[str] = Counter()
        if kept and kept == cursor.bytes:
            records, codes = _count_lines(part.lines())
            if records != cursor.records:  # the part does not match the heartbeat: start over
                part.open(0)
                cursor, codes = CollectCursor(), Counter()
            else:
                activity.logger.info(
                    "resuming %s of %s batch job %s at page %d (%d records, %d bytes on disk)",
                    params.which,
                    params.kind,
                    params.job_id,
                    cursor.pages,
                    cursor.records,
                    cursor.bytes,
                )
        else:
            cursor = CollectCursor()
        return cursor, codes

    async def _collect(
        self, params: CollectBatchRecordsParams, dest: Any, final: Path, part: PartFile, journal: Journal
    ) -> CollectedRecords:
        cursor, codes = self._resume(params, part, journal)
        journal.restart(cursor.model_dump())
        try:
            cursor, reported = await self._walk_pages(params, part, journal, cursor, codes)
            part.commit()
            journal.remove()
        finally:
            part.close()
        if reported is not None and reported != cursor.records:
            activity.logger.warning(
                "%s of %s batch job %s: server reported %d records, collected %d",
                params.which,
                params.kind,
                params.job_id,
                reported,
                cursor.records,
            )
        return CollectedRecords(
            location=await dest.publish(final),
            records=cursor.records,
            bytes=cursor.bytes,
            codes=dict(codes),
            pages=cursor.pages,
            total_records_reported=reported,
        )

    async def _walk_pages(
        self,
        params: CollectBatchRecordsParams,
        part: PartFile,
        journal: Journal,
        cursor: CollectCursor,
        codes: Counter[str],
    ) -> tuple[CollectCursor, int | None]:
        """Every page after `cursor` into the part, each journaled, then heartbeated.

        The last cursor, and the total the server reported (if it did).
        """
        reported: int | None = None
        async with Heartbeater() as heartbeater:
            heartbeater.update(cursor)
            while not cursor.done:
                what, page = await self._get_page(params, cursor)
                reported = page.total_records if page.total_records is not None else reported
                data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in page.results)
                part.write(data)
                part.flush()
                codes.update(str(r["code"]) for r in page.results if r.get("code"))
                cursor = _after_page(what, cursor, page, len(data))
                # The page is in the part (in the OS): now it counts. fsynced every SYNC_SECONDS, off the loop.
                if journal.sync_due():
                    await asyncio.to_thread(journal.append, cursor.model_dump(), sync=True)
                else:
                    journal.append(cursor.model_dump())
                heartbeater.update(cursor)
                self.client.metrics.records_collected.add(
                    len(page.results), {"kind": params.kind, "which": params.which}
                )
        return cursor, reported

    async def _get_page(self, params: CollectBatchRecordsParams, cursor: CollectCursor) -> tuple[str, RecordsPage]:
        """The page after `cursor` (and its description, for errors)."""
        what = f"get {params.which} page {cursor.pages + 1} of {params.kind} batch job {params.job_id}"
        response = await self.client.call(
            "GET",
            f"{_job_path(params.kind, params.job_id)}/{params.which}",
            what=what,
            not_ready_is_retry=True,
            params={"page_token": cursor.page_token} if cursor.page_token else None,
        )
        try:
            return what, RecordsPage.model_validate(response.body or {})
        except ValidationError:
            raise malformed_error(what, "the response is not a page of records") from None


def _after_page(what: str, cursor: CollectCursor, page: RecordsPage, size: int) -> CollectCursor:
    """The cursor after `page` (`size` bytes written); FullstoryPageLoop if the server repeats a page token."""
    next_token = page.next_page_token or None
    if next_token is not None and next_token == cursor.page_token:
        raise errors.FULLSTORY_PAGE_LOOP(
            f"{what}: the server returned the same page token again; stopping to avoid a loop"
        )
    return CollectCursor(
        page_token=next_token,
        records=cursor.records + len(page.results),
        bytes=cursor.bytes + size,
        pages=cursor.pages + 1,
        done=next_token is None,
    )


def _count_lines(lines: Any) -> tuple[int, Counter[str]]:
    records, codes = 0, Counter[str]()
    for line in lines:
        if not line.strip():
            continue
        records += 1
        try:
            code = json.loads(line).get("code")
        except (json.JSONDecodeError, AttributeError):
            code = None
        if code:
            codes[str(code)] += 1
    return records, codes
