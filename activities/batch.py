"""Batch import activities, one generic path for `events` and `users`.

- `create_batch_job`: POST the requests with an Idempotency-Key.
- `wait_for_batch_job`: one status check per attempt; "still processing" is a
  benign retryable error whose `next_retry_delay` is the server's Retry-After
  or a capped backoff, so the wait is a durable server-side timer.
- `collect_batch_records`: walk `/errors` or `/imports` pages into NDJSON,
  heartbeating `(page_token, records, bytes)`; resumes after a crash.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.fullstory_client import FullstoryClient, malformed_error, next_check_text
from activities.heartbeat import Heartbeater, resume_details
from activities.storage import PartFile, publish, resolve_destination, safe_name
from workflows.activity_types import (
    BATCH_JOB_NOT_FINISHED,
    COLLECT_BATCH_RECORDS,
    CREATE_BATCH_JOB,
    INVALID_INPUT,
    WAIT_FOR_BATCH_JOB,
    BatchJob,
    BatchJobDetails,
    CollectBatchRecordsParams,
    CollectedRecords,
    CreateBatchJobParams,
    CreateBatchJobResponse,
    RecordsPage,
    WaitForBatchJobParams,
)
from workflows.models import MAX_BATCH_REQUESTS


def poll_delay(attempt: int, cap_seconds: float) -> timedelta:
    """Capped exponential backoff between status checks: 2 s, 3 s, 4.5 s, ... up to the cap."""
    return timedelta(seconds=min(cap_seconds, 2.0 * 1.5 ** max(0, attempt - 1)))


class CollectCursor(BaseModel):
    """Heartbeat of `collect_batch_records`: the next page to fetch and what is safely on disk."""

    page_token: str | None = None
    records: int = 0
    bytes: int = 0
    pages: int = 0
    done: bool = False


def batch_records_path(root: Path, kind: str, job_id: str, which: str) -> Path:
    return root / f"batch-{kind}-{safe_name(job_id)}" / f"{which}.ndjson"


def _job_path(kind: str, job_id: str) -> str:
    return f"/v2/{kind}/batch/{quote(job_id, safe='')}"


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_INPUT, non_retryable=True)


def load_requests_file(url: str) -> tuple[list[Any], dict[str, Any] | None]:
    """Read `requests_url`: a JSON list of items, or {"requests": [...], "shared": {...}}."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        raise _invalid(f"requests_url {url!r}: only local paths and file:// URLs are supported")
    path = Path(unquote(parts.path) if parts.scheme == "file" else url).expanduser()
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise _invalid(f"requests_url {str(path)!r}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _invalid(f"requests_url {str(path)!r}: not valid JSON: {e}") from None
    shared = None
    if isinstance(data, dict):
        shared = data.get("shared")
        data = data.get("requests")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise _invalid(f"requests_url {str(path)!r}: expected a JSON list of objects or {{\"requests\": [...]}}")
    if not 1 <= len(data) <= MAX_BATCH_REQUESTS:
        raise _invalid(
            f"requests_url {str(path)!r}: holds {len(data):,} requests; a batch takes 1..{MAX_BATCH_REQUESTS:,}"
        )
    return data, shared


class BatchActivities:
    def __init__(self, client: FullstoryClient, data_dir: str) -> None:
        self.client = client
        self.data_dir = data_dir

    @activity.defn(name=CREATE_BATCH_JOB)
    async def create_batch_job(self, params: CreateBatchJobParams) -> BatchJob:
        requests, shared = params.requests, params.shared
        if params.requests_url:
            requests, shared = load_requests_file(params.requests_url)
        if shared is not None and params.kind != "events":
            raise _invalid("shared is only allowed for events batches")
        body: dict[str, Any] = {"requests": requests}
        if shared is not None:
            body["shared"] = shared
        what = f"create {params.kind} batch job ({len(requests or [])} requests)"
        response = await self.client.call(
            "POST", f"/v2/{params.kind}/batch", what=what, json_body=body,
            headers={"Idempotency-Key": params.idempotency_key},
        )
        try:
            job = CreateBatchJobResponse.model_validate(response.body).job
        except ValidationError:
            raise malformed_error(what, "the response has no job id") from None
        activity.logger.info("created %s batch job %s", params.kind, job.id)
        return job

    @activity.defn(name=WAIT_FOR_BATCH_JOB)
    async def wait_for_batch_job(self, params: WaitForBatchJobParams) -> BatchJobDetails:
        what = f"get {params.kind} batch job {params.job_id}"
        response = await self.client.call("GET", _job_path(params.kind, params.job_id), what=what)
        try:
            details = BatchJobDetails.model_validate(response.body)
        except ValidationError:
            raise malformed_error(what, "the response is not a batch job status") from None
        if details.job.status == "PROCESSING":
            attempt = activity.info().attempt
            delay = response.retry_after or poll_delay(attempt, params.max_poll_seconds)
            raise ApplicationError(
                f"{params.kind} batch job {params.job_id} is still PROCESSING "
                f"(check {attempt}); {next_check_text(delay)}",
                {"status": "PROCESSING", "attempt": attempt, "next_check_seconds": delay.total_seconds()},
                type=BATCH_JOB_NOT_FINISHED,
                next_retry_delay=delay,
                category=ApplicationErrorCategory.BENIGN,
            )
        return details

    @activity.defn(name=COLLECT_BATCH_RECORDS)
    async def collect_batch_records(self, params: CollectBatchRecordsParams) -> CollectedRecords:
        dest = resolve_destination(params.destination, self.data_dir)
        final = batch_records_path(dest.local, params.kind, params.job_id, params.which)
        part = PartFile(final)
        if final.exists() and not part.part.exists():
            # A previous attempt finished and renamed, but its completion was lost: report what is there.
            with final.open("rb") as fh:
                records, codes = _count_lines(fh)
            size = final.stat().st_size
            return CollectedRecords(location=await publish(dest, final), records=records, bytes=size,
                                    codes=dict(codes))

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
                    params.which, params.kind, params.job_id, cursor.pages, cursor.records, cursor.bytes,
                )
        else:
            cursor = CollectCursor()

        path = f"{_job_path(params.kind, params.job_id)}/{params.which}"
        reported: int | None = None
        try:
            async with Heartbeater() as heartbeater:
                heartbeater.update(cursor)
                while not cursor.done:
                    what = f"get {params.which} page {cursor.pages + 1} of {params.kind} batch job {params.job_id}"
                    response = await self.client.call(
                        "GET", path, what=what, not_ready_is_retry=True,
                        params={"page_token": cursor.page_token} if cursor.page_token else None,
                    )
                    try:
                        page = RecordsPage.model_validate(response.body or {})
                    except ValidationError:
                        raise malformed_error(what, "the response is not a page of records") from None
                    reported = page.total_records if page.total_records is not None else reported
                    data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in page.results)
                    part.write(data)
                    part.flush()
                    codes.update(str(r["code"]) for r in page.results if r.get("code"))
                    next_token = page.next_page_token or None
                    if next_token is not None and next_token == cursor.page_token:
                        raise ApplicationError(
                            f"{what}: the server returned the same page token again; stopping to avoid a loop",
                            type="FullstoryMalformedResponse", non_retryable=True,
                        )
                    cursor = CollectCursor(
                        page_token=next_token,
                        records=cursor.records + len(page.results),
                        bytes=cursor.bytes + len(data),
                        pages=cursor.pages + 1,
                        done=next_token is None,
                    )
                    heartbeater.update(cursor)
                    self.client.metrics.records_collected.add(len(page.results), {"kind": params.kind,
                                                                                  "which": params.which})
            part.commit()
        finally:
            part.close()
        if reported is not None and reported != cursor.records:
            activity.logger.warning(
                "%s of %s batch job %s: server reported %d records, collected %d",
                params.which, params.kind, params.job_id, reported, cursor.records,
            )
        return CollectedRecords(
            location=await publish(dest, final), records=cursor.records, bytes=cursor.bytes, codes=dict(codes),
            pages=cursor.pages, total_records_reported=reported,
        )


def _count_lines(lines: Any) -> tuple[int, Counter[str]]:
    records, codes = 0, Counter()
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
