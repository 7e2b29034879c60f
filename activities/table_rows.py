"""The rows of a published export file, for loading: NDJSON, a JSON array or CSV, gzipped.

JSON rows keep their types (numbers, nested objects); CSV cells become numbers where they read as
numbers and NULL where empty (CSV has no types of its own). Times stay ISO 8601 strings: the loader
(dlt) recognises them and types their columns as timestamps. Every row gets the window column, so
loading the window again can replace exactly its rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from activities.locations import Source
from activities.request_items import open_source, read_items
from vocabulary.table_load import WINDOW_COLUMN

Row = dict[str, Any]
PAGE = 5_000  # rows handed to the loader at a time: memory stays flat however big the file
_INT = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
_FLOAT = re.compile(r"^-?[0-9]+\.[0-9]+([eE][-+]?[0-9]+)?$")
DATE_FIELDS = ("EventStart", "event_start")  # an event's time: its day is its Parquet partition


def file_sha256(source: Source) -> str:
    """sha256 of the stored (compressed) bytes: the load records it, and checks it is the downloaded file."""
    h = hashlib.sha256()
    with source.open() as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_rows(source: Source, format: str) -> Iterator[Row]:
    """Each row of the file as a dict (no window column yet)."""
    if format == "FORMAT_CSV":
        yield from _csv_rows(source)
        return
    for _line, text in read_items(source, f"export file {source.describe()}"):
        yield orjson.loads(text)


def pages(rows: Iterator[Row], window: str) -> Iterator[list[Row]]:
    """The rows with the window column, PAGE at a time."""
    page: list[Row] = []
    for row in rows:
        row[WINDOW_COLUMN] = window
        page.append(row)
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


def row_date(row: Row, default: datetime | None) -> str:
    """The row's day for Hive partitions (`YYYY-MM-DD`): its event time, else the window's start day."""
    for field in DATE_FIELDS:
        value = row.get(field)
        if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
            return value[:10]
    return default.strftime("%Y-%m-%d") if default is not None else "unknown"


def _csv_rows(source: Source) -> Iterator[Row]:
    with open_source(source) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        for record in csv.DictReader(text):
            yield {k: _cell(v) for k, v in record.items() if k is not None}


def _cell(value: str | None) -> Any:
    if value is None or value == "":
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value
