"""Exports that land as tables: real DuckDB files, real Parquet, real Temporal (the time-skipping server).

Every window is loaded once its file is published complete; loading it again replaces its rows; the
destination's own `_fullstory_loads` lists each window with its file's sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.locations import Locations
from activities.table_destinations import preflight
from activities.table_load import TableLoadActivities
from helpers import TemporalClock, running_worker, server_time
from simulator.table_files import NEW_FIELD, encode, table_rows
from vocabulary.table_load import LoadFileParams, LoadSpec
from workflows.data_export_sync import DataExportSyncResult
from workflows.segment_export import SegmentExportResult
from workflows.segment_sync_input import SegmentExportSyncResult

HOUR = 3600


class Deps:
    def __init__(self, data: Path) -> None:
        self.locations = Locations(str(data))


def write_file(folder: Path, name: str, fmt: str, rows: list[dict]) -> tuple[str, str]:
    path = folder / name
    path.write_bytes(encode(rows, fmt))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def load(data: Path, spec: LoadSpec, file: str, sha: str, window: str, fmt: str = "FORMAT_NDJSON"):
    params = LoadFileParams(load=spec, kind="TYPE_EVENT", format=fmt, file=file, sha256=sha, window=window)
    return TableLoadActivities(Deps(data))._load(params)  # the activity's body, without Temporal


def warehouse(data: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)


# --- The loader itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
def test_each_format_loads_typed_columns_and_a_reload_replaces_the_window(tmp_path, fmt):
    rows = table_rows(300, seed=1, start=1_790_000_000, stop=1_790_003_600)
    file, sha = write_file(tmp_path, f"w1.{fmt}.gz", fmt, rows)
    spec = LoadSpec(destination="duckdb")
    first = load(tmp_path, spec, file, sha, "seg_w1", f"FORMAT_{fmt.upper()}")
    again = load(tmp_path, spec, file, sha, "seg_w1", f"FORMAT_{fmt.upper()}")  # a retried activity, a restart
    assert first.rows == again.rows == 300 and first.table == "fullstory.events"
    with warehouse(tmp_path) as db:
        assert db.execute("select count(*), count(distinct event_id) from fullstory.events").fetchone() == (300, 300)
        types = dict(db.execute("select column_name, column_type from (describe fullstory.events)").fetchall())
        assert types["event_start"].startswith("TIMESTAMP")
        assert types["page_duration"] == "BIGINT" and types["page_max_scroll_depth_percent"] == "DOUBLE"
        if fmt != "csv":  # CSV has no nesting: the cell holds JSON text
            assert types["user_vars"] == "JSON"
            plan = db.execute("select user_vars->>'plan' from fullstory.events order by event_start limit 1").fetchone()
            assert plan == ("free",)
        loads = db.execute("select table_name, window_id, sha256, rows from fullstory._fullstory_loads").fetchall()
        assert loads == [("events", "seg_w1", sha, 300)]


def test_a_field_first_seen_in_a_later_window_adds_a_column(tmp_path):
    spec = LoadSpec(destination="duckdb")
    f1, s1 = write_file(tmp_path, "w1.ndjson.gz", "ndjson", table_rows(50, 1, 1_790_000_000, 1_790_003_600))
    later = table_rows(40, 2, 1_790_003_600, 1_790_007_200, new_field_from=1_790_003_600)
    f2, s2 = write_file(tmp_path, "w2.ndjson.gz", "ndjson", later)
    load(tmp_path, spec, f1, s1, "w1")
    load(tmp_path, spec, f2, s2, "w2")
    column = NEW_FIELD.lower().replace("event", "event_")  # dlt's snake_case: event_sentiment
    with warehouse(tmp_path) as db:
        counts = db.execute(
            f"select _fullstory_window, count(*), count({column}) from fullstory.events group by 1 order by 1"
        ).fetchall()
    assert counts == [("w1", 50, 0), ("w2", 40, 40)]


def test_parquet_lands_in_daily_hive_partitions_named_by_window(tmp_path):
    day = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    rows = table_rows(200, 3, day + 20 * HOUR, day + 28 * HOUR)  # crosses midnight: two partitions
    file, sha = write_file(tmp_path, "w.ndjson.gz", "ndjson", rows)
    spec = LoadSpec(destination="parquet", location=str(tmp_path / "lake"))
    load(tmp_path, spec, file, sha, "seg_w")
    load(tmp_path, spec, file, sha, "seg_w")
    base = tmp_path / "lake" / "fullstory" / "events"
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*.parquet")) == [
        "event_date=2026-11-01/seg_w.parquet",
        "event_date=2026-11-02/seg_w.parquet",
    ]
    got = duckdb.execute(
        f"select count(*), count(distinct event_id), min(event_date) from read_parquet('{base}/*/*.parquet')"
    ).fetchone()
    assert got == (200, 200, datetime(2026, 11, 1).date())
    recorded = duckdb.execute(f"select window_id, sha256, rows from read_parquet('{base.parent}/_fullstory_loads/*/*.parquet')")
    assert recorded.fetchall() == [("seg_w", sha, 200)]


def test_a_file_changed_after_it_was_published_is_not_loaded(tmp_path):
    file, sha = write_file(tmp_path, "w.ndjson.gz", "ndjson", table_rows(5, 1, 0, 60))
    with pytest.raises(ApplicationError) as info:
        load(tmp_path, LoadSpec(destination="duckdb"), file, "0" * 64, "w")
    assert info.value.type == "LoadFileChanged" and info.value.non_retryable


def test_bad_load_inputs_are_clear_errors(tmp_path, monkeypatch):
    for bad in (
        {"destination": "oracle"},
        {"destination": "parquet"},
        {"destination": "duckdb", "location": "/x"},
        {"destination": "duckdb", "table": "_fullstory_loads"},
        {"destination": "duckdb", "dataset": "no spaces"},
    ):
        with pytest.raises(ValueError):
            LoadSpec.model_validate(bad)
    locations = Locations(str(tmp_path))
    with pytest.raises(ApplicationError) as info:  # outside FULLSTORY_ALLOWED_LOCATIONS
        preflight(locations, LoadSpec(destination="parquet", location="/etc/lake"), "TYPE_EVENT")
    assert info.value.non_retryable and "load.location" in info.value.message
    for name in list(__import__("os").environ):
        if name.startswith("DESTINATION__"):
            monkeypatch.delenv(name)
    with pytest.raises(ApplicationError) as info:  # no credentials configured
        preflight(locations, LoadSpec(destination="postgres"), "TYPE_EVENT")
    assert info.value.type == "LoadDestinationInvalid" and info.value.non_retryable
    assert "postgres" in info.value.message
