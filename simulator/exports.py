"""Operations and segment exports: create, poll the operation, get a signed URL, download from "storage"."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import threading
import zlib
import zoneinfo
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .downloads import Download
from .protocol import Request, Response, error, json_response, parse_rfc3339, rfc3339
from .routing import EXPORT_KEY, STORAGE, Router
from .state import SimState

STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED")
EXPORT_TYPES = ("TYPE_EVENT", "TYPE_INDIVIDUAL")
FORMATS = {
    "FORMAT_JSON": ("json", "json"),
    "FORMAT_NDJSON": ("ndjson", "ndjson"),
    # CSV content is not generated: a CSV export carries NDJSON rows under a .csv.gz name.
    "FORMAT_CSV": ("ndjson", "csv"),
}
ACCESS_DENIED = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
)


@dataclass
class Operation:
    id: str
    created: float
    duration: float
    final_state: str
    error_details: str | None
    progress_steps: int
    results_shape: str
    export_id: str
    type: str = "SEARCH_EXPORT"

    def state_at(self, now: float) -> tuple[str, float]:
        """(state, estimatePctComplete) at a moment."""
        elapsed = now - self.created
        if self.duration <= 0 or elapsed >= self.duration:
            if self.final_state == "COMPLETED":
                return "COMPLETED", 100
            return "FAILED", math.floor((self.progress_steps - 1) / self.progress_steps * 100)
        if elapsed < 0.1 * self.duration:
            return "PENDING", 0
        step = math.floor(elapsed / self.duration * self.progress_steps)
        return "RUNNING", math.floor(step * 100 / self.progress_steps)


class Exports:
    def __init__(self, sim: SimState) -> None:
        self.sim = sim
        self.operations: dict[str, Operation] = {}
        self.downloads: dict[str, Download] = {}
        self.idempotent: dict[str, str] = {}
        self.secret = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._seq = 0
        # Every export POST /segments/v1/exports created (not idempotent repeats): operation id, timeRange, when.
        self.created: list[tuple[str, dict, float]] = []

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def add_operation(
        self,
        op_id: str | None = None,
        duration: float = 0.0,
        final_state: str = "COMPLETED",
        error_details: str | None = None,
        progress_steps: int = 4,
        results_shape: str = "searchExportId",
        size: int = 1 << 20,
        url_ttl: float = 300.0,
        range_support: bool = True,
        reset_after_bytes: int | None = None,
        reset_count: int = 1,
        truncate_gzip: bool = False,
        truncate_count: int = 1,
        filename: str = "export.ndjson.gz",
        file_format: str = "ndjson",
        export_id: str | None = None,
        head: str = "",
        seed: int | None = None,
        table_rows: int = 0,
        new_field_from: float | None = None,
    ) -> str:
        if final_state not in ("COMPLETED", "FAILED"):
            raise ValueError("final_state must be COMPLETED or FAILED")
        if results_shape not in ("searchExportId", "downloadUrl"):
            raise ValueError("results_shape must be 'searchExportId' or 'downloadUrl'")
        if progress_steps < 1:
            raise ValueError("progress_steps must be at least 1")
        n = self._next()
        op_id = op_id or f"op-{secrets.token_hex(6)}-{n:04d}"
        export_id = export_id or f"exp-{secrets.token_hex(6)}-{n:04d}"
        download = Download(
            export_id,
            int(size),
            filename,
            file_format,
            seed=n if seed is None else seed,
            range_support=range_support,
            url_ttl=float(url_ttl),
            reset_after_bytes=reset_after_bytes,
            reset_count=reset_count,
            truncate_gzip=truncate_gzip,
            truncate_count=truncate_count,
            head=head,
            table_rows=int(table_rows),
            table_time=_time_range_of(head),
            new_field_from=new_field_from,
        )
        if final_state == "FAILED" and error_details is None:
            error_details = "export failed"
        op = Operation(
            op_id,
            self.sim.clock_now(),
            float(duration),
            final_state,
            error_details,
            int(progress_steps),
            results_shape,
            export_id,
        )
        with self._lock:
            self.downloads[export_id] = download
            self.operations[op_id] = op
        return op_id

    def download_for(self, op_or_export_id: str) -> Download:
        op = self.operations.get(op_or_export_id)
        return self.downloads[op.export_id if op else op_or_export_id]

    # --- signed URLs ---------------------------------------------------------------------------------

    def signature(self, export_id: str, filename: str, expires: int) -> str:
        return hmac.new(self.secret, f"{export_id}/{filename}:{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, export_id: str) -> tuple[str, int]:
        dl = self.downloads[export_id]
        expires = math.floor(self.sim.clock_now() + dl.url_ttl)
        sig = self.signature(export_id, dl.filename, expires)
        url = f"{self.sim.base_url}/_storage/{quote(export_id)}/{quote(dl.filename)}?Expires={expires}&Signature={sig}"
        return url, expires

    # --- routes --------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        router.add("POST", "/segments/v1/exports", self.create_export, EXPORT_KEY)
        router.add("GET", "/operations/v1", self.list_operations, EXPORT_KEY)
        router.add("GET", "/operations/v1/{operation_id}", self.get_operation, EXPORT_KEY)
        router.add("GET", "/search/v1/exports/{export_id}/results", self.export_results, EXPORT_KEY)
        router.add("GET", "/_storage/{export_id}/{filename}", self.storage_get, STORAGE)

    def create_export(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return error(400, "request body is not valid JSON", "invalid_argument")
        problem = validate_export(body)
        if problem:
            return error(400, problem, "invalid_argument")
        key = req.headers.get("idempotency-key")
        with self._lock:
            if key and key in self.idempotent:
                return json_response({"operationId": self.idempotent[key]})
        content, ext = FORMATS[body["format"]]
        if self.sim.export_defaults.get("table_rows") and ext == "csv":
            content = "csv"  # table files are real CSV
        options: dict[str, Any] = {"filename": f"export.{ext}.gz", "file_format": content, **self.sim.export_defaults}
        # The file answers the request: its first row names the segment and timeRange, and its rows depend on them.
        time_range = body["timeRange"]
        options["head"] = json.dumps(
            {"ExportSegmentId": body["segmentId"], "ExportType": body["type"], "ExportTimeRange": time_range},
            separators=(",", ":"),
            sort_keys=True,
        )
        options["seed"] = zlib.crc32(options["head"].encode())
        start = parse_rfc3339(time_range["start"])
        if any(parse_rfc3339(w) == start for w in self.sim.fail_windows):
            options.update(final_state="FAILED", error_details=f"export of {time_range['start']} failed (simulated)")
        created = op_id = self.add_operation(**options)
        with self._lock:
            if key:
                op_id = self.idempotent.setdefault(key, op_id)
            if op_id == created:
                self.created.append((op_id, dict(time_range), self.sim.clock_now()))
        return json_response({"operationId": op_id})

    def operation_json(self, op: Operation, now: float) -> dict:
        state, pct = op.state_at(now)
        out: dict[str, Any] = {
            "id": op.id,
            "type": op.type,
            "state": state,
            "estimatePctComplete": pct,
            "createdAt": rfc3339(op.created),
        }
        if state in ("COMPLETED", "FAILED"):
            out["finishedAt"] = rfc3339(op.created + op.duration)
        if state == "FAILED":
            out["errorDetails"] = op.error_details
        if state == "COMPLETED":
            if op.results_shape == "searchExportId":
                out["results"] = {"searchExportId": op.export_id}
            else:
                out["results"] = {"downloadUrl": self.signed_url(op.export_id)[0]}
        return out

    def get_operation(self, req: Request) -> Response:
        op = self.operations.get(req.params["operation_id"])
        if op is None and self.sim.adopt_unknown_ids:
            op = self.operations[self.add_operation(req.params["operation_id"], **self.sim.export_defaults)]
        if op is None:
            return error(404, f"operation {req.params['operation_id']} not found")
        return json_response(self.operation_json(op, self.sim.clock_now()))

    def list_operations(self, req: Request) -> Response:
        now = self.sim.clock_now()
        try:
            limit = int(req.query.get("limit") or 20)
            offset = (
                int(base64.urlsafe_b64decode(req.query["pagination_token"]).decode().removeprefix("ops:"))
                if req.query.get("pagination_token")
                else 0
            )
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return error(400, "limit or pagination_token is not valid", "invalid_argument")
        if not 1 <= limit <= 100:
            return error(400, "limit must be between 1 and 100", "invalid_argument")
        state, type_ = req.query.get("state"), req.query.get("type")
        if state and state not in STATES:
            return error(400, f"state must be one of {', '.join(STATES)}", "invalid_argument")
        ops = sorted(self.operations.values(), key=lambda o: o.created, reverse=True)
        items = [
            j
            for j in (self.operation_json(o, now) for o in ops)
            if (not state or j["state"] == state) and (not type_ or j["type"] == type_)
        ]
        page = items[offset : offset + limit]
        out: dict[str, Any] = {"operations": page}
        if offset + limit < len(items):
            out["nextPaginationToken"] = base64.urlsafe_b64encode(f"ops:{offset + limit}".encode()).decode()
        return json_response(out)

    def export_results(self, req: Request) -> Response:
        export_id = req.params["export_id"]
        if export_id not in self.downloads:
            return error(404, f"export {export_id} not found")
        op = next((o for o in self.operations.values() if o.export_id == export_id), None)
        if op is not None and op.state_at(self.sim.clock_now())[0] != "COMPLETED":
            return error(400, f"export {export_id} is not ready", "failed_precondition")
        url, expires = self.signed_url(export_id)
        return json_response({"location": url, "expires": rfc3339(expires)})

    def storage_get(self, req: Request) -> Response:
        dl = self.downloads.get(req.params["export_id"])
        if dl is None or dl.filename != req.params["filename"]:
            return denied("The specified key does not exist.", 404, "NoSuchKey")
        try:
            expires = int(req.query.get("Expires", ""))
        except ValueError:
            return denied("Query-string authentication requires the Signature and Expires parameters")
        if not hmac.compare_digest(req.query.get("Signature", ""), self.signature(dl.id, dl.filename, expires)):
            return denied("The request signature we calculated does not match the signature you provided.")
        if expires < self.sim.clock_now():
            return denied("Request has expired")
        return dl.serve(req)


def denied(message: str, status: int = 403, code: str = "AccessDenied") -> Response:
    body = ACCESS_DENIED.format(message=message).replace("AccessDenied", code).encode()
    return Response(status, body, {"Content-Type": "application/xml"})


def validate_export(body: Any) -> str | None:
    """The first problem with a segment export request, naming the field; None when it is fine."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("segmentId"), str) or not body["segmentId"]:
        return "segmentId is required"
    if body.get("type") not in EXPORT_TYPES:
        return f"type must be one of {', '.join(EXPORT_TYPES)}"
    if body.get("format") not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}"
    for name, required in (("timeRange", True), ("segmentTimeRange", False)):
        value = body.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, dict):
            return f"{name} is required with start and end (RFC 3339)"
        try:
            start = parse_rfc3339(value["start"]) if value.get("start") else None
            end = parse_rfc3339(value["end"]) if value.get("end") else None
        except (TypeError, ValueError):
            return f"{name}.start and {name}.end must be RFC 3339 timestamps with a UTC offset"
        if start is None:
            return f"{name}.start is required"
        if end is not None and end <= start:
            return f"{name}.end must be after {name}.start"
    tz = body.get("timezone")
    if tz is not None:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            return f"timezone {tz!r} is not an IANA time zone"
    fields = body.get("fields")
    if fields is not None and (
        not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields)
    ):
        return "fields must be a non-empty list of field names"
    return None


def _time_range_of(head: str) -> tuple[float, float]:
    """A table file's rows fall in the export's requested timeRange (the file's head names it)."""
    try:
        r = json.loads(head)["ExportTimeRange"]
        return parse_rfc3339(r["start"]), parse_rfc3339(r["end"])
    except (ValueError, KeyError, TypeError):
        return 0.0, 3600.0
