"""Input models reject bad values with a clear, single-line error naming the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from vocabulary.contract import describe_validation_error, idempotency_key
from workflows.batch_job_input import BatchImportInput, batch_workflow_id

GOOD_REQ = [{"name": "e", "user": {"uid": "u1"}}]


@pytest.mark.parametrize(
    "raw,field_hint",
    [
        ({"kind": "sessions", "job_id": "x"}, "kind"),
        ({"kind": "events"}, "exactly one of job_id"),
        ({"kind": "events", "job_id": "x", "requests": GOOD_REQ}, "exactly one of job_id"),
        ({"kind": "events", "requests": []}, "requests"),
        ({"kind": "events", "requests": [{}] * 50_001}, "at most 50000"),
        ({"kind": "events", "job_id": ""}, "job_id"),
        ({"kind": "events", "job_id": "has space"}, "job_id"),
        ({"kind": "events", "job_id": "x", "timeout": "PT0S"}, "timeout"),
        ({"kind": "events", "job_id": "x", "timeout": -5}, "timeout"),
        ({"kind": "events", "job_id": "x", "timeout": "six hours"}, "timeout"),
        ({"kind": "events", "job_id": "x", "max_poll_interval": 0.1}, "max_poll_interval"),
        ({"kind": "events", "job_id": "x", "jobid": "typo"}, "jobid"),
        ({"kind": "users", "requests": GOOD_REQ, "shared": {"a": 1}}, "shared"),
        ({"kind": "events", "job_id": "x", "collect_imports": "maybe"}, "collect_imports"),
    ],
)
def test_bad_batch_inputs_are_rejected_clearly(raw, field_hint):
    with pytest.raises(ValidationError) as info:
        BatchImportInput.model_validate(raw)
    text = describe_validation_error(BatchImportInput, info.value)
    assert text.startswith("invalid BatchImportInput: ")
    assert field_hint in text
    assert "\n" not in text


def test_durations_accept_iso_and_seconds():
    assert BatchImportInput.model_validate({"kind": "events", "job_id": "x", "timeout": "PT6H"}).timeout == timedelta(
        hours=6
    )
    assert BatchImportInput.model_validate({"kind": "users", "job_id": "x", "timeout": 90}).timeout == timedelta(
        seconds=90
    )


def test_exactly_50000_requests_is_accepted():
    inp = BatchImportInput.model_validate({"kind": "events", "requests": [{}] * 50_000})
    assert len(inp.requests) == 50_000


def test_error_text_does_not_echo_input_values():
    with pytest.raises(ValidationError) as info:
        BatchImportInput.model_validate({"kind": "events", "job_id": "x", "timeout": "secret-looking-value"})
    assert "secret-looking-value" not in describe_validation_error(BatchImportInput, info.value)


def test_deterministic_ids():
    assert batch_workflow_id("events", "abc=") == "fullstory-batch-events-abc="
    assert idempotency_key("wf-1") == idempotency_key("wf-1") != idempotency_key("wf-2")
