"""Small pieces every workflow uses: input parsing, failure unwrapping, progress."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from workflows.activity_types import INVALID_INPUT
    from workflows.models import Progress, describe_validation_error

M = TypeVar("M", bound=BaseModel)


def parse_input(model: type[M], raw: Any) -> M:
    """Validate a workflow input; bad input fails the workflow at once (never a retry loop)."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ApplicationError(describe_validation_error(model, e), type=INVALID_INPUT, non_retryable=True) from None


def raise_activity_failure(err: ActivityError, timeout_message: str, timeout_type: str) -> NoReturn:
    """Re-raise an activity's failure as the workflow's own, with its clear message at the top.

    A schedule-to-close timeout is the workflow's overall deadline: it becomes
    `timeout_type` with `timeout_message`.
    """
    cause = err.cause
    if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_CLOSE:
        last = cause.cause.message if cause.cause else None
        raise ApplicationError(
            timeout_message + (f" (last check: {last})" if last else ""), type=timeout_type, non_retryable=True
        ) from err
    if isinstance(cause, ApplicationError):
        raise ApplicationError(
            cause.message, *cause.details, type=cause.type, non_retryable=True
        ) from err
    raise ApplicationError(str(cause or err), type=type(cause or err).__name__, non_retryable=True) from err


class ProgressTracker:
    """Keeps the `progress` query answer and the UI's current details in step."""

    def __init__(self) -> None:
        self.progress = Progress()

    def set(self, phase: str, detail: str, **fields: Any) -> None:
        self.progress = self.progress.model_copy(
            update={"phase": phase, "detail": detail, "updated_at": workflow.now(), **fields}
        )
        workflow.set_current_details(f"**{phase}**: {detail}")


def remaining(deadline: Any, floor: timedelta = timedelta(seconds=1)) -> timedelta:
    """Time left until `deadline` (a workflow-time datetime), never below `floor`."""
    return max(deadline - workflow.now(), floor)
