"""Operation activities: create a segment export, wait for an operation.

`wait_for_operation` makes one check per attempt. "Still running" is a benign
retryable error with `next_retry_delay` (Retry-After or capped backoff); the
activity returns early only when the state changes or the estimate moves by
`report_pct_step` points, so the workflow can show progress while history stays
bounded (about six returns for a whole export).
"""

from __future__ import annotations

from urllib.parse import quote

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.batch import poll_delay
from activities.fullstory_client import (
    FullstoryClient,
    malformed_error,
    next_check_text,
)
from workflows.activity_types import (
    CREATE_SEGMENT_EXPORT,
    OPERATION_NOT_FINISHED,
    WAIT_FOR_OPERATION,
    CreateSegmentExportParams,
    OperationSnapshot,
    WaitForOperationParams,
    redact_url,
)
from workflows.models import Operation

FINAL_STATES = ("COMPLETED", "FAILED")


class OperationActivities:
    def __init__(self, client: FullstoryClient) -> None:
        self.client = client

    @activity.defn(name=CREATE_SEGMENT_EXPORT)
    async def create_segment_export(self, params: CreateSegmentExportParams) -> str:
        what = f"create segment export of segment {params.body.get('segmentId')}"
        response = await self.client.call("POST", "/segments/v1/exports", what=what, json_body=params.body,
                                          headers={"Idempotency-Key": params.idempotency_key})
        operation_id = (response.body or {}).get("operationId") if isinstance(response.body, dict) else None
        if not operation_id:
            raise malformed_error(what, "the response has no operationId")
        activity.logger.info("created segment export operation %s", operation_id)
        return str(operation_id)

    @activity.defn(name=WAIT_FOR_OPERATION)
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
        delay = response.retry_after or poll_delay(checks, params.max_poll_seconds)
        pct_text = f", {pct:g}% complete" if pct is not None else ""
        raise ApplicationError(
            f"operation {params.operation_id} is {op.state}{pct_text}; {next_check_text(delay)}",
            {"state": op.state, "estimate_pct_complete": pct, "checks": checks},
            type=OPERATION_NOT_FINISHED,
            next_retry_delay=delay,
            category=ApplicationErrorCategory.BENIGN,
        )
