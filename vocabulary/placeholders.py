"""`{date}` and `{datetime}` in a scheduled run's input, filled from the time the run was scheduled for.

A schedule's action holds one input for every run; a nightly import names a new file every night
(`users-{date}.ndjson.gz`). Each run fills its own: from its *scheduled* time, which Temporal records
on the run as the search attribute `TemporalScheduledStartTime`, so a run that started late, was
caught up after an outage or was backfilled reads its own night's file, not today's.

    fill_placeholders({"source": "/crm/users-{date}.ndjson.gz"}, datetime(2026, 12, 3, 2, tzinfo=UTC))
    -> {"source": "/crm/users-2026-12-03.ndjson.gz"}

Only the input's top-level strings are filled (source, destination, requests_url, ...), never the
items inside (batch `requests`, `shared`: user data is sent as it is). Times are UTC. Pure: no I/O,
nothing of ours imported (workflows and the CLI both use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# The search attribute Temporal sets on every run a schedule starts (also on triggered and backfilled runs).
SCHEDULED_START_TIME = "TemporalScheduledStartTime"

DATE = "{date}"  # 2026-12-03
DATETIME = "{datetime}"  # 2026-12-03T02-00-00Z: no colons, safe in file and object names
PLACEHOLDERS = (DATE, DATETIME)


def placeholder_values(scheduled: datetime) -> dict[str, str]:
    """What each placeholder becomes for a run scheduled at `scheduled` (in UTC)."""
    at = scheduled.astimezone(UTC) if scheduled.tzinfo else scheduled.replace(tzinfo=UTC)
    return {DATE: at.strftime("%Y-%m-%d"), DATETIME: at.strftime("%Y-%m-%dT%H-%M-%SZ")}


def fields_with_placeholders(raw: Any) -> list[str]:
    """The top-level string fields of an input (a JSON object) that hold a placeholder."""
    if not isinstance(raw, Mapping):
        return []
    return [str(k) for k, v in raw.items() if isinstance(v, str) and any(p in v for p in PLACEHOLDERS)]


def fill_placeholders(raw: Any, scheduled: datetime) -> Any:
    """`raw` with `{date}` and `{datetime}` in its top-level strings replaced; anything else as it is.

    Returns `raw` itself when it holds no placeholder (so an input without one is untouched)."""
    fields = fields_with_placeholders(raw)
    if not fields:
        return raw
    values = placeholder_values(scheduled)
    filled = dict(raw)
    for name in fields:
        text = filled[name]
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        filled[name] = text
    return filled


def unscheduled_message(fields: list[str]) -> str:
    """Why an input with placeholders is refused outside a schedule, and what to do instead."""
    return (
        f"{', '.join(fields)}: {DATE} and {DATETIME} are filled only in a run started by a schedule "
        "(from its scheduled time); run one night now with `temporal schedule trigger` or "
        "`temporal schedule backfill`, or name the file itself"
    )
