"""Exports that land as tables: real DuckDB files, real Parquet, real Temporal (the time-skipping server).

Every window is loaded once its file is published complete; loading it again replaces its rows; the
destination's own `_fullstory_loads` lists each window with its file's sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
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
from helpers import TemporalClock, free_port, running_worker, server_time
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
    recorded = duckdb.execute(
        f"select window_id, sha256, rows from read_parquet('{base.parent}/_fullstory_loads/*/*.parquet')"
    )
    assert recorded.fetchall() == [("seg_w", sha, 200)]

    # The window exported again (after a FAILED export, say) with rows on one day only: no file of it is
    # left on the other day, so its old rows are not read twice.
    later, later_sha = write_file(
        tmp_path, "w2.ndjson.gz", "ndjson", table_rows(50, 4, day + 25 * HOUR, day + 26 * HOUR)
    )
    load(tmp_path, spec, later, later_sha, "seg_w")
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*.parquet")) == ["event_date=2026-11-02/seg_w.parquet"]
    assert duckdb.execute(f"select count(*) from read_parquet('{base}/*/*.parquet')").fetchone() == (50,)


def test_a_file_changed_after_it_was_published_is_not_loaded(tmp_path):
    file, sha = write_file(tmp_path, "w.ndjson.gz", "ndjson", table_rows(5, 1, 0, 60))
    with pytest.raises(ApplicationError) as info:
        load(tmp_path, LoadSpec(destination="duckdb"), file, "0" * 64, "w")
    assert info.value.type == "LoadFileChanged" and info.value.non_retryable


@pytest.mark.parametrize(("fmt", "body"), [("FORMAT_NDJSON", b""), ("FORMAT_JSON", b"[]\n"), ("FORMAT_CSV", b"")])
def test_an_empty_window_is_recorded_with_zero_rows(tmp_path, fmt, body):
    path = tmp_path / "w.gz"
    path.write_bytes(gzip.compress(body))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load(tmp_path, LoadSpec(destination="duckdb"), str(path), sha, "quiet_hour", fmt).rows == 0
    with warehouse(tmp_path) as db:  # the destination knows the window is loaded, and that it was empty
        assert db.execute("select window_id, rows from fullstory._fullstory_loads").fetchall() == [("quiet_hour", 0)]


def test_an_export_that_is_not_json_is_rejected_not_retried(tmp_path):
    path = tmp_path / "w.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"EventId": "a"}\n{"EventId": \n'))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ApplicationError) as info:
        load(tmp_path, LoadSpec(destination="duckdb"), str(path), sha, "w")
    assert (
        info.value.type == "LoadRejected"
        and info.value.non_retryable
        and "duckdb fullstory.events" in info.value.message
    )


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
    no_dlt_credentials(monkeypatch)
    with pytest.raises(ApplicationError) as info:  # no credentials configured
        preflight(locations, LoadSpec(destination="postgres"), "TYPE_EVENT")
    assert info.value.type == "LoadDestinationInvalid" and info.value.non_retryable
    assert "postgres" in info.value.message


def no_dlt_credentials(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("DESTINATION__"):
            monkeypatch.delenv(name)


def test_a_warehouse_by_name_takes_dlts_standard_credentials(tmp_path, monkeypatch):
    no_dlt_credentials(monkeypatch)
    db = tmp_path / "warehouse.sqlite"
    monkeypatch.setenv("DESTINATION__SQLALCHEMY__CREDENTIALS", f"sqlite:///{db}")  # never in the input
    file, sha = write_file(tmp_path, "w.ndjson.gz", "ndjson", table_rows(100, 1, 0, 3600))
    spec = LoadSpec(destination="sqlalchemy", dataset="main")
    assert preflight(Locations(str(tmp_path)), spec, "TYPE_EVENT") == "sqlalchemy main.events"
    load(tmp_path, spec, file, sha, "w1")
    load(tmp_path, spec, file, sha, "w1")
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*), count(distinct event_id) from events").fetchone() == (100, 100)
        assert conn.execute("select window_id, sha256, rows from _fullstory_loads").fetchall() == [("w1", sha, 100)]


def test_a_warehouse_that_cannot_be_reached_fails_the_check_and_a_load_is_retried(tmp_path, monkeypatch):
    no_dlt_credentials(monkeypatch)
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", f"postgresql://loader:s3cret@127.0.0.1:{free_port()}/db")
    spec = LoadSpec(destination="postgres")
    with pytest.raises(ApplicationError) as info:  # at the start: the caller must fix it
        preflight(Locations(str(tmp_path)), spec, "TYPE_EVENT")
    assert info.value.type == "LoadDestinationInvalid" and info.value.non_retryable
    assert "cannot be reached" in info.value.message and "s3cret" not in info.value.message
    file, sha = write_file(tmp_path, "w.ndjson.gz", "ndjson", table_rows(5, 1, 0, 60))
    with pytest.raises(ApplicationError) as info:  # later, mid-sync: a warehouse that is down is retried
        load(tmp_path, spec, file, sha, "w1")
    assert info.value.type == "LoadFailed" and not info.value.non_retryable
    assert "postgres" in info.value.message and "s3cret" not in info.value.message


# --- The workflows (the time-skipping server, the simulator over a socket) ----------------------------------


def aligned(ts: float, step: int = HOUR) -> datetime:
    return datetime.fromtimestamp((int(ts) // step + 1) * step, tz=UTC)


async def test_a_segment_sync_loads_every_window_once_and_a_rerun_adds_nothing(ts_env, sim, tmp_path):
    sim.clock = await TemporalClock.start(ts_env)
    sim.export_defaults.update(duration=120, table_rows=40)
    start = aligned(await server_time(ts_env) - 30 * HOUR)
    args = {
        "segment_id": "everyone",
        "format": "FORMAT_CSV",
        "window": "PT1H",
        "start": start.isoformat(),
        "stop": (start + 6 * timedelta(hours=1)).isoformat(),
        "delay": "PT1H",
        "max_in_flight": 3,
        "load": {"destination": "duckdb"},
    }
    data = tmp_path / "data"
    async with running_worker(ts_env.client, sim.base_url, data) as tq:
        wid = f"sync-{uuid.uuid4().hex[:8]}"
        handle = await ts_env.client.start_workflow(
            "SegmentExportSyncWorkflow", args, id=wid, task_queue=tq, result_type=SegmentExportSyncResult
        )
        result = await handle.result()
        progress = await handle.query("progress")
        creates = len(sim.exports.created)
        again = await ts_env.client.execute_workflow(  # the same sync again: every window is listed as loaded
            "SegmentExportSyncWorkflow", args, id=wid, task_queue=tq, result_type=SegmentExportSyncResult
        )
    assert result.windows == 6 and result.rows_loaded == 6 * 40 and result.table == "duckdb fullstory.events"
    assert progress["windows_loaded"] == 6 and progress["rows_loaded"] == 240
    assert len(sim.exports.created) == creates == 6 and again.windows == 0  # nothing exported or loaded twice
    manifest = [json.loads(line) for line in Path(result.manifest_location).read_text().splitlines()]
    assert [m["rows"] for m in manifest] == [40] * 6 and {m["table"] for m in manifest} == {"duckdb fullstory.events"}
    with warehouse(data) as db:
        per_window = db.execute("select _fullstory_window, count(*) from fullstory.events group by 1").fetchall()
        assert sorted(n for _, n in per_window) == [40] * 6
        assert db.execute("select count(distinct event_id) from fullstory.events").fetchone() == (240,)
        loads = dict(db.execute("select window_id, sha256 from fullstory._fullstory_loads").fetchall())
    assert sorted(loads.values()) == sorted(m["sha256"] for m in manifest)


async def test_a_segment_export_loads_parquet_to_s3_read_back_with_duckdb(ts_env, sim, tmp_path, s3_bucket):
    fs, bucket = s3_bucket
    sim.export_defaults.update(duration=0, table_rows=120)
    window = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}
    async with running_worker(
        ts_env.client, sim.base_url, tmp_path / "data", fullstory_allowed_locations=f"FULLSTORY_DATA_DIR,s3://{bucket}"
    ) as tq:
        result = await ts_env.client.execute_workflow(
            "SegmentExportWorkflow",
            {
                "segment_id": "everyone",
                "time_range": window,
                "load": {"destination": "parquet", "location": f"s3://{bucket}/exports", "table": "web_events"},
            },
            id=f"x-{uuid.uuid4().hex}",
            task_queue=tq,
            result_type=SegmentExportResult,
        )
    assert result.loaded is not None and result.loaded.rows == 120
    db = duckdb.connect()
    db.register_filesystem(fs)
    got = db.execute(
        f"select count(*), count(distinct event_id) from read_parquet('s3://{bucket}/exports/fullstory/web_events/"
        "event_date=2026-11-01/*.parquet')"
    ).fetchone()
    assert got == (120, 120)
    recorded = db.execute(
        f"select sha256, rows from read_parquet('s3://{bucket}/exports/fullstory/_fullstory_loads/*/*.parquet')"
    ).fetchall()
    assert recorded == [(result.sha256, 120)]


async def test_a_data_export_sync_loads_each_bundle_before_its_cursor_moves(ts_env, sim, tmp_path):
    sim.clock = await TemporalClock.start(ts_env)
    ids = sim.add_bundles(3, start=1_790_000_000, span=HOUR, table_rows=25, available_at=0)
    data = tmp_path / "data"
    async with running_worker(ts_env.client, sim.base_url, data) as tq:
        result = await ts_env.client.execute_workflow(
            "DataExportSyncWorkflow",
            {"start": 1_790_000_000, "stop": 1_790_000_000 + 3 * HOUR, "load": {"destination": "duckdb"}},
            id=f"x-{uuid.uuid4().hex}",
            task_queue=tq,
            result_type=DataExportSyncResult,
        )
    assert result.bundles == 3 and result.rows_loaded == 75
    with warehouse(data) as db:
        rows = db.execute("select _fullstory_window, count(*) from fullstory.legacy_events group by 1 order by 1")
        assert rows.fetchall() == [(f"bundle_{i}", 25) for i in sorted(ids)]


async def test_an_unknown_warehouse_fails_before_any_export_is_created(ts_env, sim, tmp_path, monkeypatch):
    no_dlt_credentials(monkeypatch)
    async with running_worker(ts_env.client, sim.base_url, tmp_path / "data") as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow",
            {
                "segment_id": "everyone",
                "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
                "load": {"destination": "postgres"},
            },
            id=f"x-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "LoadDestinationInvalid"
    assert "postgres" in cause.message and sim.exports.created == []
