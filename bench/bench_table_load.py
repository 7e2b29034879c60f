"""Table load benchmark: one window's export file loaded into DuckDB and into Parquet, against DuckDB
reading the same file into a table by itself (`CREATE TABLE AS SELECT * FROM read_json(...)`, the
speed of reading).

    .venv/bin/python bench/bench_table_load.py [ROWS ...]     # default: 100000 1000000

Prints, per size and format: rows/s of our load (the activity's body: sha256 check, DuckDB read,
dlt load with the window's merge, the `_fullstory_loads` record), rows/s of DuckDB alone, their
ratio, and the time of a second load of the same window (a retry: it replaces the rows). Asserts
nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from activities.locations import Locations
from activities.table_load import TableLoadActivities
from simulator.table_files import encode, table_rows
from vocabulary.table_load import LoadFileParams, LoadSpec

READERS = {"ndjson": "read_json('{f}', format = 'newline_delimited')", "csv": "read_csv('{f}', header = true)"}


class Deps:
    def __init__(self, data: Path) -> None:
        self.locations = Locations(str(data))


def one(rows: int, fmt: str, destination: str, root: Path) -> None:
    data = root / f"{destination}-{fmt}-{rows}"
    data.mkdir()
    file = data / f"w.{fmt}.gz"
    file.write_bytes(encode(table_rows(rows, 1, 1_790_000_000, 1_790_003_600), fmt))
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    spec = LoadSpec(destination=destination, location=str(data / "lake") if destination == "parquet" else None)
    params = LoadFileParams(
        load=spec, kind="TYPE_EVENT", format=f"FORMAT_{fmt.upper()}", file=str(file), sha256=sha, window="w1"
    )
    activities = TableLoadActivities(Deps(data))  # type: ignore[arg-type]
    t = time.perf_counter()
    activities._load(params)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    activities._load(params)
    again = time.perf_counter() - t
    t = time.perf_counter()
    with duckdb.connect(str(data / "reference.duckdb")) as db:
        db.execute(f"CREATE TABLE t AS SELECT * FROM {READERS[fmt].format(f=file)}")
    alone = time.perf_counter() - t
    print(
        f"{rows:>9,} rows {fmt:<6} -> {destination:<7}: ours {rows / ours:>9,.0f} rows/s ({ours:5.2f} s), "
        f"DuckDB alone {rows / alone:>9,.0f} rows/s ({alone:5.2f} s), ratio {alone / ours:.2f}; "
        f"a reload {again:5.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="*", type=int, default=[100_000, 1_000_000])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-table-load-"))
    try:
        for rows in args.rows:
            for fmt, destination in (("ndjson", "duckdb"), ("csv", "duckdb"), ("ndjson", "parquet")):
                one(rows, fmt, destination, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
