"""Load a published export file into a table, exactly once per window, with dlt.

DuckDB reads the file into typed Arrow batches (table_rows.py); dlt (https://dlthub.com) puts DuckDB,
Parquet on a filesystem and the warehouses behind one API, evolves the schema when a field first
appears in a later window, and keeps nested properties as JSON (`max_table_nesting=0`). What we add:

- **Exactly once per window.** Every row carries `_fullstory_window`. SQL destinations load with
  dlt's `merge` / `delete-insert` on that key: the window's old rows are deleted and its new rows
  inserted in one step, so a retried, restarted or re-exported window replaces its rows and never adds
  a second copy. Parquet files are named by the window
  (`<location>/<dataset>/<table>/event_date=YYYY-MM-DD/<window>.parquet`): loading again overwrites them.
- **The destination's own record.** After the rows, one row per window in `_fullstory_loads`
  (window_id, file, sha256, rows, loaded_at), replaced the same way: completeness is a SQL query away.
- **The file that was downloaded.** The load reads the published file and checks its sha256 against the
  download's; a file changed since is an error, not a silent load of something else.

Loads in one worker process run one at a time (one DuckDB file has one writer); a second worker process
on the same DuckDB file waits for the lock by retrying.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.deps import ActivityDeps
from activities.heartbeat import Heartbeater
from activities.locations import Locations
from activities.table_destinations import load_error, make_destination, preflight
from activities.table_rows import ExportFile, local_copy
from vocabulary import errors
from vocabulary.table_load import (
    LOADS_TABLE,
    WINDOW_COLUMN,
    CheckLoadParams,
    LoadedWindow,
    LoadFileParams,
    LoadSpec,
)

# dlt reports anonymous usage to dlthub unless told not to: a worker sends nothing anywhere it was not asked to.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
_one_load_at_a_time = threading.Lock()
LOADS_COLUMNS = {  # typed even when a value is NULL (a bundle has no window_start)
    "window_start": {"data_type": "timestamp"},
    "window_end": {"data_type": "timestamp"},
    "rows": {"data_type": "bigint"},
    "loaded_at": {"data_type": "timestamp"},
}
SCHEMA = "fullstory_jobs"  # dlt's schema name for every load (one schema per destination dataset)


class TableLoadActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.locations = deps.locations

    @activity.defn(name="check_load_destination")
    async def check_load_destination(self, params: CheckLoadParams) -> str:
        """Before any export: the destination is known, configured and reachable (else LoadDestinationInvalid)."""
        return await asyncio.to_thread(preflight, self.locations, params.load, params.kind)

    @activity.defn(name="load_file")
    async def load_file(self, params: LoadFileParams) -> LoadedWindow:
        """Replace the window's rows with the file's; then record the window in `_fullstory_loads`."""
        async with Heartbeater():
            return await asyncio.to_thread(self._load, params)

    def _load(self, params: LoadFileParams) -> LoadedWindow:
        source = self.locations.source(params.file, "file")
        with _one_load_at_a_time, _work_dir(params.window) as work:
            path, sha256 = local_copy(source, work)
            if sha256 != params.sha256:
                raise errors.LOAD_FILE_CHANGED(
                    f"{params.file}: sha256 {sha256[:12]}… is not the downloaded file's {params.sha256[:12]}…; "
                    "it changed after it was published"
                )
            loader = WindowLoader(self.locations, params, work)
            try:
                export = ExportFile(path, params.format, work)
                try:
                    rows = loader.load_rows(export)
                finally:
                    export.close()
                loader.record(rows, sha256)
            except Exception as e:  # DuckDB's and dlt's own errors: one table decides
                raise load_error(params.load, params.kind, e) from None
        activity.logger.info("loaded %s rows of window %s into %s", rows, params.window, loader.table)
        return LoadedWindow(
            table=f"{params.load.dataset}.{loader.table}",
            window=params.window,
            rows=rows,
            sha256=sha256,
            destination=params.load.describe(params.kind),
        )


class WindowLoader:
    """One window's load: its rows, then its record; a pipeline per run in a scratch folder of its own."""

    def __init__(self, locations: Locations, params: LoadFileParams, work: Path) -> None:
        self.locations, self.params, self.work = locations, params, work
        self.spec: LoadSpec = params.load
        self.table = self.spec.table_for(params.kind)
        self.runs = 0

    def load_rows(self, export: ExportFile) -> int:
        """The window's rows replace whatever the table held of it; the count of rows."""
        if self.spec.destination != "parquet":
            counted = _Counter()
            self._run(
                counted.rows(export.batches(self.params.window)),
                self.table,
                write_disposition={"disposition": "merge", "strategy": "delete-insert"},
                merge_key=WINDOW_COLUMN,
            )
            return counted.n
        return self._load_parquet(export)

    def _load_parquet(self, export: ExportFile) -> int:
        """One file per day the window's rows fall on: `<table>/event_date=<day>/<window>.parquet`; then a
        file of this window on another day (an earlier export of it, with other days) is removed."""
        days = export.days(self.params.window_start)
        files = f"{self.spec.dataset}/{self.table}/event_date=%s/{self.params.window}.parquet"
        total = 0
        for day in days:
            counted = _Counter()
            self._run(
                counted.rows(export.batches(self.params.window, day, default_day=days[0])),
                self.table,
                write_disposition="append",
                layout="{table_name}/event_date={event_date}/{window}.{ext}",
                placeholders={"event_date": day},
            )
            total += counted.n
        lake = self.locations.destination(self.spec.location, "load.location")
        stale = lake.remove_matching(files % "*", keep={files % day for day in days})
        if stale:
            activity.logger.info("window %s: removed its files of other days: %s", self.params.window, stale)
        return total

    def record(self, rows: int, sha256: str) -> None:
        """The window's row in `_fullstory_loads`, written after its rows (a record means the rows are there)."""
        p = self.params
        record = {
            "table_name": self.table,
            "window_id": p.window,
            "window_start": p.window_start,
            "window_end": p.window_end,
            "file": p.file,
            "sha256": sha256,
            "rows": rows,
            "loaded_at": datetime.now(UTC),
        }
        if self.spec.destination == "parquet":
            self._run(
                iter([[record]]),
                LOADS_TABLE,
                write_disposition="append",
                layout="{table_name}/table={loaded_table}/{window}.{ext}",
                placeholders={"loaded_table": self.table},
                columns=LOADS_COLUMNS,
            )
        else:
            self._run(
                iter([[record]]),
                LOADS_TABLE,
                write_disposition={"disposition": "merge", "strategy": "delete-insert"},
                primary_key=("table_name", "window_id"),
                columns=LOADS_COLUMNS,
            )

    def _run(
        self,
        data: Iterator[Any],
        table: str,
        *,
        layout: str | None = None,
        placeholders: dict[str, str] | None = None,
        **hints: Any,
    ) -> None:
        import dlt

        self.runs += 1
        destination = make_destination(
            self.locations,
            self.spec,
            layout=layout,
            placeholders={"window": self.params.window, **(placeholders or {})},
        )
        pipeline = dlt.pipeline(
            pipeline_name=f"fullstory_jobs_{self.runs}",
            pipelines_dir=str(self.work),
            destination=destination,
            dataset_name=self.spec.dataset,
        )
        resource = dlt.resource(data, name=table, table_name=table, max_table_nesting=0, **hints)
        if self.spec.destination == "parquet":
            pipeline.run(resource, schema=dlt.Schema(SCHEMA), loader_file_format="parquet")
        else:
            pipeline.run(resource, schema=dlt.Schema(SCHEMA))  # the destination's preferred format


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def rows(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self.n += batch.num_rows
            yield batch


class _work_dir:
    """A scratch folder for one load (dlt's pipeline state, a copy of a remote file), removed after it.

    Named by this process and the window, so two processes never share one; a folder left by a process
    that died (a SIGKILL mid-load) is removed by the next load in this machine's temp folder."""

    ROOT = Path(tempfile.gettempdir()) / "fullstory-jobs-loads"

    def __init__(self, window: str) -> None:
        key = hashlib.sha256(window.encode()).hexdigest()[:16]
        self.path = self.ROOT / f"{os.getpid()}-{key}"

    def __enter__(self) -> Path:
        for old in self.ROOT.glob("*-*"):
            pid = old.name.split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                shutil.rmtree(old, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
