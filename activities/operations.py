"""Operation activities: create a segment export, wait for an operation.

`wait_for_operation` makes one check per attempt. "Still running" is a benign
retryable error with `next_retry_delay` (Retry-After or capped backoff); the
activity returns early only when the state changes or the estimate moves by
`report_pct_step` points, so the workflow can show progress while history stays
bounded (about six returns for a whole export).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator
from temporalio import activity

from activities.deps import ActivityDeps
from activities.fullstory_client import malformed_error, next_check_text
from vocabulary import errors
from vocabulary.contract import ResultModel, redact_url
from vocabulary.policies import poll_delay

OperationState = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED"]
FINAL_STATES = ("COMPLETED", "FAILED")


class Operation(ResultModel):
    """A Fullstory operation (`GET /operations/v1/{id}`), in snake_case."""

    id: str
    type: str | None = None
    state: OperationState
    error_details: str | None = Field(default=None, validation_alias=AliasChoices("errorDetails", "error_details"))
    created_at: datetime | None = Field(default=None, validation_alias=AliasChoices("createdAt", "created_at"))
    finished_at: datetime | None = Field(default=None, validation_alias=AliasChoices("finishedAt", "finished_at"))
    estimate_pct_complete: float | None = Field(
        default=None, validation_alias=AliasChoices("estimatePctComplete", "estimate_pct_complete")
    )
    results: dict[str, Any] = Field(default_factory=dict)

    @field_validator("results", mode="before")
    @classmethod
    def _results(cls, v: Any) -> dict[str, Any]:
        return v or {}


class CreateSegmentExportParams(BaseModel):
    body: dict[str, Any]  # Fullstory's camelCase request, built from SegmentExportInput
    idempotency_key: str


class WaitForOperationParams(BaseModel):
    operation_id: str
    known_state: str | None = None
    known_pct: float | None = None
    checks_before: int = 0
    max_poll_seconds: float = 60.0
    report_pct_step: float = 25.0


class OperationSnapshot(BaseModel):
    """What `wait_for_operation` returns: the operation when it ended or made visible progress."""

    operation: Any  # workflows.models.Operation as a dict (camelCase-free, snake_case)
    checks: int


class OperationActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client = deps.client

    @activity.defn(name="create_segment_export")
    async def create_segment_export(self, params: CreateSegmentExportParams) -> str:
        what = f"create segment export of segment {params.body.get('segmentId')}"
        response = await self.client.call(
            "POST",
            "/segments/v1/exports",
            what=what,
            json_body=params.body,
            headers={"Idempotency-Key": params.idempotency_key},
        )
        operation_id = (response.body or {}).get("operationId") if isinstance(response.body, dict) else None
        if not operation_id:
            raise malformed_error(what, "the response has no operationId")
        activity.logger.info("created segment export operation %s", operation_id)
        return str(operation_id)

    @activity.defn(name="wait_for_operation")
    async def wait_for_operation(self, params: WaitForOperationParams) -> OperationSnapshot:
        what = f"get operation {params.operation_id}"
        response = await self.client.call("GET", f"/operations/v1/{quote(params.operation_id, safe='')}", what=what)
        try:
            op = Operation.model_validate(response.body)
        except ValidationError:
            raise malformed_error(what, "the response is not an operation") from None
        checks = params.checks_before + activity.info().attempt
        pct = op.estimate_pct_complete
        moved = pct is not None and (params.known_pct is None or pct >= params.known_pct + params.report_pct_step)
        if op.state in FINAL_STATES or op.state != params.known_state or moved:
            snapshot = op.model_dump(mode="json")
            if isinstance(snapshot["results"].get("downloadUrl"), str):
                # A signed URL's query is a credential: keep it out of history (the download asks for a fresh one).
                snapshot["results"]["downloadUrl"] = redact_url(snapshot["results"]["downloadUrl"])
            return OperationSnapshot(operation=snapshot, checks=checks)
        delay = response.retry_after or poll_delay(checks, timedelta(seconds=params.max_poll_seconds))
        pct_text = f", {pct:g}% complete" if pct is not None else ""
        raise errors.OPERATION_NOT_FINISHED(
            f"operation {params.operation_id} is {op.state}{pct_text}; {next_check_text(delay)}",
            {"state": op.state, "estimate_pct_complete": pct, "checks": checks},
            next_retry_delay=delay,
        )
