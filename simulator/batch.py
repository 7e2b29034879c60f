"""Batch imports of events and users: create, status, and the paged errors and imports of a job."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import Request, Response, error, json_response, rfc3339
from .routing import ANY_KEY, Router
from .state import SimState

KINDS = ("events", "users")
MAX_REQUESTS = 50_000
RECORD_EPOCH = 1_700_000_000  # timestamps inside records are fixed, so records are the same every run
ALNUM = string.ascii_letters + string.digits


@dataclass
class BatchJob:
    id: str
    kind: str
    created: float
    duration: float
    imports: int
    errors: int
    page_size: int
    imports_page_size: int
    final_status: str
    error_codes: tuple[str, ...]
    retry_after_while_processing: str | None
    clock: Callable[[], float]  # the simulator's clock_now, so swapping sim.clock applies to old jobs too
    # Jobs created by POST wait in the org's queue (None) until one of the org's processing slots frees.
    started: float | None = None
    failed_items: tuple[dict, ...] = ()  # the submitted items that fail, echoed in their error records

    @property
    def finished(self) -> float:
        return (self.created if self.started is None else self.started) + self.duration

    def done(self, now: float) -> bool:
        return self.started is not None and now >= self.finished

    @property
    def status(self) -> str:
        return self.final_status if self.done(self.clock()) else "PROCESSING"

    def total(self, which: str) -> int:
        return self.errors if which == "errors" else self.imports

    def record(self, which: str, i: int) -> dict:
        return error_record(self, i) if which == "errors" else import_record(self, i)


def error_record(job: BatchJob, i: int) -> dict:
    code = job.error_codes[i % len(job.error_codes)]
    message = f"record {i} failed: {code.replace('_', ' ')}"
    if job.failed_items:  # the real API echoes the failing item as it was sent
        return {"message": message, "code": code, "event" if job.kind == "events" else "user": job.failed_items[i]}
    if job.kind == "events":
        return {
            "message": message,
            "code": code,
            "event": {
                "name": "Support Ticket",
                "timestamp": rfc3339(RECORD_EPOCH + i),
                "properties": {"seq": i, "priority": "Normal", "source": "Email"},
                "user": {"uid": f"user-{i}"},
            },
        }
    return {
        "message": message,
        "code": code,
        "user": {"uid": f"user-{i}", "display_name": f"User {i}", "properties": {"seq": i}},
    }


def import_record(job: BatchJob, i: int) -> dict:
    # Imported items follow the failed ones in the batch: seq numbers never collide with errors'.
    seq = job.errors + i
    if job.kind == "events":
        return {
            "name": "Support Ticket",
            "timestamp": rfc3339(RECORD_EPOCH + seq),
            "properties": {"seq": seq, "priority": "Normal", "source": "Email"},
            "user": {"id": str(1_000_000 + seq), "uid": f"user-{seq}"},
            "session": {"id": f"{1_000_000 + seq}:{2_000_000 + seq}"},
        }
    return {
        "id": str(1_000_000 + seq),
        "uid": f"user-{seq}",
        "display_name": f"User {seq}",
        "email": f"user-{seq}@example.com",
        "properties": {"seq": seq},
    }


def encode_token(job_id: str, which: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{which}:{job_id}:{offset}".encode()).decode()


def decode_token(token: str, job_id: str, which: str) -> int | None:
    try:
        t_which, t_job, offset = base64.urlsafe_b64decode(token.encode()).decode().rsplit(":", 2)
        n = int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return n if (t_which, t_job) == (which, job_id) and n >= 0 else None


class BatchImports:
    def __init__(self, sim: SimState) -> None:
        self.sim = sim
        self.jobs: dict[str, BatchJob] = {}
        self.idempotent: dict[tuple[str, str], tuple[str, dict]] = {}
        self._lock = threading.Lock()
        self._seq = 0
        # Fullstory's org limit: about `org_limit` batches are processed at once, more wait (PROCESSING);
        # at `org_reject_at` in progress every create gets 429 with Retry-After.
        self.org_limit = 100
        self.org_reject_at = 200
        self.org_retry_after = 10
        self._running: list[BatchJob] = []
        self._queued: list[BatchJob] = []
        self._freed_at = 0.0
        self.peak_in_progress = 0  # the most jobs created by POST in progress (processing or queued) at once
        self.create_requests: Counter[str] = Counter()  # POSTs per Idempotency-Key
        self.jobs_created: Counter[str] = Counter()  # jobs made per Idempotency-Key (more than 1: a duplicate)
        self.rejected_429 = 0
        self._bodies: dict[tuple[str, str], str] = {}

    def in_progress(self) -> int:
        self.tick(self.sim.clock_now())
        with self._lock:
            return len(self._running) + len(self._queued)

    def tick(self, now: float) -> None:
        """Move the org's queue on to `now`: finished jobs free their slots, queued ones start in order."""
        with self._lock:
            while True:
                while self._queued and len(self._running) < self.org_limit:
                    job = self._queued.pop(0)
                    job.started = max(job.created, self._freed_at)
                    self._running.append(job)
                if not self._running:
                    return
                first = min(self._running, key=lambda j: j.finished)
                if first.finished > now:
                    return
                self._running.remove(first)
                self._freed_at = first.finished

    def new_id(self) -> str:
        with self._lock:
            self._seq += 1
            return "".join(secrets.choice(ALNUM) for _ in range(8)) + f"{self._seq:04d}="

    def add(
        self,
        kind: str = "events",
        job_id: str | None = None,
        duration: float = 0.0,
        imports: int = 10,
        errors: int = 0,
        page_size: int = 100,
        final_status: str | None = None,
        error_codes: tuple[str, ...] | list[str] = ("invalid_field", "required_field"),
        retry_after_while_processing: float | str | None = None,
        imports_page_size: int | None = None,
        created: float | None = None,
    ) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if page_size < 1 or (imports_page_size is not None and imports_page_size < 1):
            raise ValueError("page sizes must be at least 1")
        if not error_codes:
            raise ValueError("error_codes must not be empty")
        if final_status is None:
            final_status = "COMPLETED" if errors == 0 else "FAILED"
        if final_status not in ("COMPLETED", "FAILED"):
            raise ValueError("final_status must be COMPLETED or FAILED")
        job = BatchJob(
            id=job_id or self.new_id(),
            kind=kind,
            created=self.sim.clock() if created is None else created,
            duration=float(duration),
            imports=int(imports),
            errors=int(errors),
            page_size=int(page_size),
            imports_page_size=int(imports_page_size or page_size),
            started=self.sim.clock() if created is None else created,
            final_status=final_status,
            error_codes=tuple(error_codes),
            retry_after_while_processing=None
            if retry_after_while_processing is None
            else _retry_after_text(retry_after_while_processing),
            clock=self.sim.clock_now,
        )
        with self._lock:
            self.jobs[job.id] = job
        return job.id

    def expected_records(self, job_id: str, which: str = "errors") -> list[dict]:
        if which not in ("errors", "imports"):
            raise ValueError("which must be 'errors' or 'imports'")
        job = self.jobs[job_id]
        return [job.record(which, i) for i in range(job.total(which))]

    # --- routes -------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        kind = "events|users"
        for version in ("v2", "v2beta"):
            router.add("POST", f"/{version}/{{kind}}/batch", self.create, ANY_KEY, kind=kind)
            router.add("GET", f"/{version}/{{kind}}/batch/{{job_id}}", self.status, ANY_KEY, kind=kind)
            router.add("GET", f"/{version}/{{kind}}/batch/{{job_id}}/errors", self.errors_page, ANY_KEY, kind=kind)
            router.add("GET", f"/{version}/{{kind}}/batch/{{job_id}}/imports", self.imports_page, ANY_KEY, kind=kind)

    def create(self, req: Request) -> Response:
        kind = req.params["kind"]
        try:
            body = req.json()
        except ValueError:
            return error(400, "request body is not valid JSON", "invalid_argument")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return error(400, "requests is required and must be a non-empty list", "invalid_argument")
        if len(requests) > MAX_REQUESTS:
            return error(
                400, f"requests has {len(requests)} items; at most {MAX_REQUESTS} are allowed", "invalid_argument"
            )
        if kind == "users" and "shared" in body:
            return error(400, "shared is not a field of a users batch import", "invalid_argument")
        key = req.headers.get("idempotency-key")
        digest = hashlib.sha256(req.body).hexdigest()
        with self._lock:
            if key:
                self.create_requests[key] += 1
            if key and (kind, key) in self.idempotent:
                if self._bodies.get((kind, key), digest) != digest:
                    return error(400, "Idempotency-Key reused with a different body", "invalid_argument")
                return json_response(self.idempotent[(kind, key)][1])
        now = self.sim.clock_now()
        self.tick(now)
        with self._lock:
            if len(self._running) + len(self._queued) >= self.org_reject_at:
                self.rejected_429 += 1
                return error(
                    429,
                    "too many batch imports in progress",
                    "rate_limited",
                    headers={"Retry-After": str(self.org_retry_after)},
                )
        options = dict(self.sim.batch_defaults)
        errors = min(int(options.pop("errors", 0)), len(requests))
        options.setdefault("imports", max(0, len(requests) - errors))
        options.pop("kind", None)
        job_id = self.add(kind, errors=errors, **options)
        job = self.jobs[job_id]
        # The failing items are spread over the batch; their error records echo them.
        job.failed_items = tuple(requests[i * len(requests) // errors] for i in range(errors)) if errors else ()
        with self._lock:
            job.started = None
            self._queued.append(job)
        self.tick(now)
        with self._lock:
            self.peak_in_progress = max(self.peak_in_progress, len(self._running) + len(self._queued))
        payload = {"job": {"id": job.id, "status": "PROCESSING", "created": rfc3339(job.created)}}
        if key:
            with self._lock:
                # Two racing creates with one key: the first one stored wins, the other job is dropped.
                stored = self.idempotent.setdefault((kind, key), (job.id, payload))
                if stored[0] != job.id:
                    self.jobs.pop(job.id, None)
                    if job in self._queued:
                        self._queued.remove(job)
                    if job in self._running:
                        self._running.remove(job)
                    payload = stored[1]
                else:
                    self.jobs_created[key] += 1
                    self._bodies[(kind, key)] = digest
        return json_response(payload)

    def _job(self, req: Request) -> BatchJob | None:
        job = self.jobs.get(req.params["job_id"])
        if job is None and self.sim.adopt_unknown_ids:
            options = {k: v for k, v in self.sim.batch_defaults.items() if k != "kind"}
            self.add(req.params["kind"], job_id=req.params["job_id"], **options)
            job = self.jobs[req.params["job_id"]]
        return job if job is not None and job.kind == req.params["kind"] else None

    def status(self, req: Request) -> Response:
        self.tick(self.sim.clock_now())
        job = self._job(req)
        if job is None:
            return error(404, f"batch import job {req.params['job_id']} not found")
        meta: dict[str, Any] = {"id": job.id, "created": rfc3339(job.created)}
        if not job.done(self.sim.clock_now()):
            headers = {}
            if job.retry_after_while_processing is not None:
                headers["Retry-After"] = job.retry_after_while_processing
            meta["status"] = "PROCESSING"
            payload: dict[str, Any] = {"imports": 0, "job": meta}
            if self.sim.status_errors_field == "always":
                payload["errors"] = 0
            return json_response(payload, headers=headers)
        meta["status"] = job.final_status
        meta["finished"] = rfc3339(job.finished)
        payload = {"imports": job.imports, "job": meta}
        if job.final_status == "FAILED" or self.sim.status_errors_field == "always":
            payload["errors"] = job.errors
        return json_response(payload)

    def errors_page(self, req: Request) -> Response:
        return self._page(req, "errors")

    def imports_page(self, req: Request) -> Response:
        return self._page(req, "imports")

    def _page(self, req: Request, which: str) -> Response:
        self.tick(self.sim.clock_now())
        job = self._job(req)
        if job is None:
            return error(404, f"batch import job {req.params['job_id']} not found")
        if not job.done(self.sim.clock_now()):
            return Response(202, b"", {})
        token = req.query.get("page_token", "")
        offset = 0
        total = job.total(which)
        if token:
            decoded = decode_token(token, job.id, which)
            if decoded is None or decoded >= max(total, 1):
                return error(400, f"page_token {token!r} is not valid for this job", "invalid_argument")
            offset = decoded
        if self.sim.page_delay:
            time.sleep(self.sim.page_delay)
        size = job.page_size if which == "errors" else job.imports_page_size
        end = min(total, offset + size)
        payload: dict[str, Any] = {
            "results": [job.record(which, i) for i in range(offset, end)],
            "total_records": str(total),
        }
        if end < total:
            payload["next_page_token"] = encode_token(job.id, which, end)
        elif self.sim.last_page_token_style == "empty":
            payload["next_page_token"] = ""
        return json_response(payload)


def _retry_after_text(value: float | str) -> str:
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)
