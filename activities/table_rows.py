"""The rows of a published export file, for loading: read by DuckDB, handed on as typed Arrow batches.

DuckDB's own readers do the parsing (`read_json` for NDJSON and JSON arrays, `read_csv`), gzip
included, streaming: ISO times become timestamps, numbers numbers, CSV cells are typed by sniffing,
nested objects become structs (JSON columns at the destination). The whole file is scanned for its
columns (`sample_size=-1`), so a field that appears only late in a file is still a column. Every row
gets the window column, so loading the window again can replace exactly its rows.

A file in an object store is copied to a scratch folder first (DuckDB's own S3 reader is an extension
it would download); a local file is read where it lies. Either way its sha256 is computed on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from activities.locations import Source
from vocabulary.table_load import WINDOW_COLUMN

BATCH_ROWS = 50_000  # rows handed to the loader at a time: memory stays flat however big the file
DAY_FIELDS = ("EventStart", "event_start")  # an event's time: its UTC day is its Parquet partition
_READERS = {
    "FORMAT_NDJSON": "read_json($path, format = 'newline_delimited', sample_size = -1)",
    "FORMAT_JSON": "read_json($path, format = 'array', sample_size = -1)",
    "FORMAT_CSV": "read_csv($path, header = true, sample_size = -1)",
}


def local_copy(source: Source, work: Path) -> tuple[Path, str]:
    """A local path to read the file from, and the file's sha256 (of the stored, compressed bytes)."""
    h = hashlib.sha256()
    local = source.local_path()
    if local is not None:
        with source.open() as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return local, h.hexdigest()
    copy = work / ("export" + "".join(Path(source.location).suffixes[-2:]))
    with source.open() as fh, copy.open("wb") as out:
        while block := fh.read(1 << 20):
            h.update(block)
            out.write(block)
    return copy, h.hexdigest()


class ExportFile:
    """One export file as DuckDB reads it: its columns, its days, its rows as Arrow batches."""

    def __init__(self, path: Path, format: str, work: Path) -> None:
        """Read once into a table of DuckDB's own, on disk in `work` (memory stays bounded), then queried."""
        import duckdb

        self.db = duckdb.connect(str(work / "rows.duckdb"))
        self.db.execute("SET TimeZone = 'UTC'")  # a day is a UTC day
        self.db.execute(f"CREATE TABLE export_rows AS SELECT * FROM {_READERS[format]}", {"path": str(path)})
        self.columns = [row[0] for row in self.db.sql("DESCRIBE export_rows").fetchall()]
        self.day_field = next((f for f in DAY_FIELDS if f in self.columns), None)

    def _query(self, sql: str, **params: Any) -> Any:
        """A relation over the rows (streamed when read as Arrow)."""
        return self.db.sql(sql, params=params or None)

    def _day(self) -> str:
        assert self.day_field is not None
        return f"strftime(try_cast(\"{self.day_field}\" AS TIMESTAMPTZ), '%Y-%m-%d')"

    def days(self, default: datetime | None) -> list[str]:
        """The UTC days the rows fall on (by their event time; else the window's first day)."""
        fallback = default.strftime("%Y-%m-%d") if default is not None else "unknown"
        if self.day_field is None:
            return [fallback]
        found = self._query(
            f"SELECT DISTINCT coalesce({self._day()}, $fallback) FROM export_rows ORDER BY 1", fallback=fallback
        )
        return [row[0] for row in found.fetchall()]

    def batches(self, window: str, day: str | None = None, default_day: str = "") -> Iterator[Any]:
        """The rows (of one day, if given) with the window column, BATCH_ROWS at a time."""
        where, params = "", {"window": window}
        if day is not None and self.day_field is not None:
            where, params = (
                f" WHERE coalesce({self._day()}, $fallback) = $day",
                {**params, "fallback": default_day, "day": day},
            )
        result = self._query(f"SELECT *, $window AS {WINDOW_COLUMN} FROM export_rows{where}", **params)
        reader = result.to_arrow_reader(BATCH_ROWS)
        yield from reader

    def close(self) -> None:
        self.db.close()
