"""The registry, the error catalogue and the HTTP error table agree with each other and with the code."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from temporalio import activity, workflow

from activities.fullstory_client import ERROR_TABLE, MALFORMED, OTHER_4XX, OTHER_5XX, TRANSPORT, rule_for
from vocabulary import errors
from workflows.registry import BY_COMMAND, JOBS, activity_classes
from workflows.schemas import CONTRACT

REPO = Path(__file__).resolve().parents[1]


def test_the_http_table_uses_only_catalogued_types_and_retries_per_the_catalogue():
    rules = [*ERROR_TABLE.values(), OTHER_4XX, OTHER_5XX, TRANSPORT, MALFORMED]
    for rule in rules:
        assert errors.CATALOGUE[rule.error.name] is rule.error
    for status in range(400, 600):
        error = rule_for(status).error
        # 4xx are the caller's to fix (not retried) except 429; every 5xx is retried.
        assert error.retryable == (status == 429 or status >= 500), status
        assert (error.name in errors.NON_RETRYABLE) == (not error.retryable)


def test_non_retryable_is_derived_from_the_catalogue():
    assert errors.NON_RETRYABLE == [e.name for e in errors.CATALOGUE.values() if not e.retryable]
    raised = errors.INVALID_INPUT("x")
    assert raised.type == "InvalidInput" and raised.non_retryable
    benign = errors.BATCH_JOB_NOT_FINISHED("later")
    assert not benign.non_retryable and benign.category.name == "BENIGN"


def test_no_error_type_is_spelled_outside_the_catalogue():
    """Every `ApplicationError(..., type=...)` in the code takes its type from the catalogue, never a literal."""
    offenders = []
    for path in [*(REPO / "workflows").glob("*.py"), *(REPO / "activities").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "ApplicationError"
            ):
                for kw in node.keywords:
                    if kw.arg == "type" and isinstance(kw.value, ast.Constant):
                        offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_every_registered_job_is_complete():
    names = [job.name for job in JOBS]
    assert len(set(names)) == len(names)
    # Every job the CLI can start has its command; the others are started by workflows only.
    assert set(BY_COMMAND) == {job.command for job in JOBS if job.startable}
    for job in JOBS:
        assert f"{job.name}.input" in CONTRACT and f"{job.name}.result" in CONTRACT
        for field in job.hidden_fields:
            assert field in job.input.model_fields
    for cls in activity_classes():
        defined = [m for m in vars(cls).values() if callable(m) and activity._Definition.from_callable(m)]
        assert defined, f"{cls.__name__} defines no activity"
        # The worker registers an activities class's public coroutine methods (wiring.build_activities):
        # exactly its @activity.defn methods.
        public = [m for name, m in vars(cls).items() if not name.startswith("_") and inspect.iscoroutinefunction(m)]
        assert public == defined, f"{cls.__name__}: a public coroutine method that is not an activity"


def test_every_workflow_is_registered_under_its_class_name():
    """Job.name is the class name (no private temporalio API in the registry): the decorator must agree."""
    for job in JOBS:
        defn = workflow._Definition.from_class(job.workflow)
        assert defn is not None and defn.name == job.workflow.__name__ == job.name


def test_the_poll_curve_reaches_its_cap_and_never_overflows():
    from datetime import timedelta

    from vocabulary.policies import poll_delay

    cap = timedelta(minutes=10)
    assert poll_delay(1, cap) == timedelta(seconds=2) and poll_delay(2, cap) == timedelta(seconds=3)
    assert poll_delay(10_000, cap) == cap  # a wait of months at the time-skipping server's pace
