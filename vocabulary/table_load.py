"""Loading exports as tables: the `load` input, what a load step is asked, and what it answers.

`load` is off when absent. With it, each window (a segment export sync's window, a single segment
export, a legacy bundle) is loaded into a table once its file is published complete, and loading the
same window again replaces its rows (activities/table_load.py). Workflows and activities both speak
these models; no I/O here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from vocabulary.contract import LOCATION_HELP, InputModel, ResultModel

EMBEDDED = ("duckdb", "parquet")  # always installed
# dlt's names for the warehouses it loads (`pip install "dlt[<name>]"` adds a driver); credentials come
# from dlt's standard configuration: DESTINATION__<NAME>__CREDENTIALS__... or .dlt/secrets.toml.
WAREHOUSES = (
    "athena",
    "bigquery",
    "clickhouse",
    "databricks",
    "dremio",
    "motherduck",
    "mssql",
    "postgres",
    "redshift",
    "snowflake",
    "sqlalchemy",
    "synapse",
)
DESTINATIONS = EMBEDDED + WAREHOUSES
DEFAULT_DATASET = "fullstory"
DEFAULT_TABLES = {"TYPE_EVENT": "events", "TYPE_INDIVIDUAL": "individuals", "BUNDLE": "legacy_events"}
LOADS_TABLE = "_fullstory_loads"  # the destination's own record: one row per window loaded, with its sha256
WINDOW_COLUMN = "_fullstory_window"  # on every row: the window it came from (reloading a window replaces these)
DUCKDB_FILE = "warehouse.duckdb"  # in FULLSTORY_DATA_DIR: `fullstory.events` resolves (no catalog named fullstory)

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
LoadFormat = Literal["FORMAT_NDJSON", "FORMAT_JSON", "FORMAT_CSV"]


class LoadSpec(InputModel):
    """The `load` input: `{"destination": "duckdb"}` is enough; the rest has defaults."""

    destination: str = Field(
        description="duckdb (a file in FULLSTORY_DATA_DIR), parquet (needs location), or a warehouse: "
        + ", ".join(WAREHOUSES)
    )
    dataset: str = Field(default=DEFAULT_DATASET, pattern=_IDENTIFIER, description="Schema (dataset) of the table.")
    table: str | None = Field(
        default=None,
        pattern=_IDENTIFIER,
        description="Table name; default events (TYPE_EVENT), individuals (TYPE_INDIVIDUAL), legacy_events (bundles).",
    )
    location: str | None = Field(
        default=None, description=f"parquet only: where the Parquet files go, {LOCATION_HELP}."
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: object) -> object:
        """`"load": "duckdb"` (and `--load duckdb`) means `{"destination": "duckdb"}`."""
        return {"destination": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _known(self) -> LoadSpec:
        if self.destination not in DESTINATIONS:
            raise ValueError(f"destination {self.destination!r} is not one of: {', '.join(DESTINATIONS)}")
        if self.destination == "parquet" and not self.location:
            raise ValueError("destination parquet needs a location (a folder or an object-store prefix)")
        if self.destination != "parquet" and self.location is not None:
            raise ValueError("location applies only to destination parquet")
        if self.table is not None and self.table.startswith("_"):
            raise ValueError("table names starting with _ are the loader's own")
        return self

    def table_for(self, kind: str) -> str:
        """The table: as given, else by what the export holds (TYPE_EVENT, TYPE_INDIVIDUAL, BUNDLE)."""
        return self.table or DEFAULT_TABLES[kind]

    def describe(self, kind: str) -> str:
        """`duckdb fullstory.events`, `parquet s3://b/p fullstory.events`: for the UI and errors."""
        where = f" {self.location}" if self.location else ""
        return f"{self.destination}{where} {self.dataset}.{self.table_for(kind)}"


def window_key(*parts: str) -> str:
    """A window's name in the table and in file names: `seg_1_20261101T000000Z_20261102T000000Z`."""
    return "_".join(re.sub(r"[^A-Za-z0-9-]+", "-", p).strip("-") or "x" for p in parts)[:200]


class LoadFileParams(InputModel):
    """Load one published file as one window's rows."""

    load: LoadSpec
    kind: str  # TYPE_EVENT, TYPE_INDIVIDUAL or BUNDLE: picks the default table and the partition column
    format: LoadFormat
    file: str  # the published file's location (gzip)
    sha256: str  # what the download computed: the load checks the file is still that one
    window: str  # window_key(...): replaces this window's rows
    window_start: datetime | None = None
    window_end: datetime | None = None


class LoadedWindow(ResultModel):
    """What a load answers, and what the progress and the manifest report."""

    table: str  # `dataset.table` at the destination
    window: str
    rows: int
    sha256: str
    destination: str  # LoadSpec.describe(): where, for people


class CheckLoadParams(InputModel):
    load: LoadSpec
    kind: str
