"""Where loads go: the `load` input turned into a dlt destination, checked before any export, and the one
table that turns a failed load into our error types.

- duckdb: `<FULLSTORY_DATA_DIR>/warehouse.duckdb` (the data dir must be local);
- parquet: dlt's filesystem destination at `location` (local or an object store, inside
  FULLSTORY_ALLOWED_LOCATIONS), files named by the window;
- a warehouse by dlt's name, its credentials from dlt's own configuration
  (`DESTINATION__POSTGRES__CREDENTIALS=postgresql://...`, or `.dlt/secrets.toml`): we never see them in an
  input, a history or a log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.locations import Locations
from vocabulary import errors
from vocabulary.table_load import DUCKDB_FILE, LoadSpec


def duckdb_file(locations: Locations) -> Path:
    dest = locations.destination(None, "FULLSTORY_DATA_DIR")
    if dest.remote is not None:
        raise errors.LOAD_DESTINATION_INVALID(
            f"load destination duckdb: FULLSTORY_DATA_DIR {dest.remote} is not a local folder (DuckDB needs a "
            "local file); load to parquet at an object-store location instead"
        )
    return dest.local / DUCKDB_FILE


def make_destination(
    locations: Locations, spec: LoadSpec, *, layout: str | None = None, placeholders: dict[str, Any] | None = None
) -> Any:
    """The dlt destination for `spec` (a file layout and its placeholders apply to parquet)."""
    import dlt
    from dlt.common.destination import Destination

    if spec.destination == "duckdb":
        return dlt.destinations.duckdb(credentials=str(duckdb_file(locations)))
    if spec.destination == "parquet":
        assert spec.location is not None  # LoadSpec requires it
        dest = locations.destination(spec.location, "load.location")
        return dlt.destinations.filesystem(
            bucket_url=dest.remote if dest.remote is not None else dest.local.as_uri(),
            layout=layout or "{table_name}/{window}.{ext}",
            extra_placeholders=dict(placeholders or {}),
        )
    return Destination.from_reference(spec.destination)


def preflight(locations: Locations, spec: LoadSpec, kind: str) -> str:
    """The destination is known, configured and (for a warehouse) answers: else one non-retryable error."""
    what = spec.describe(kind)
    if spec.destination == "duckdb":
        duckdb_file(locations)
        return what
    if spec.destination == "parquet":
        locations.destination(spec.location, "load.location")
        return what
    import dlt

    try:
        pipeline = dlt.pipeline(
            pipeline_name="fullstory_jobs_check",
            destination=make_destination(locations, spec),
            dataset_name=spec.dataset,
        )
        with pipeline.sql_client() as client:
            client.execute_sql("SELECT 1")
    except Exception as e:
        raise _invalid(spec, kind, e) from None
    return what


def load_error(spec: LoadSpec, kind: str, e: Exception) -> ApplicationError:
    """A failed load, by the one table: our own errors pass; configuration is the caller's to fix; a file
    DuckDB cannot read, or rows the destination refuses for good, are not retried; anything else (a
    warehouse that is down, a DuckDB file locked by another process) is retried."""
    import duckdb
    from dlt.common.exceptions import TerminalException

    cause = _cause(e)
    if isinstance(cause, ApplicationError):
        return cause
    if _is_configuration(cause):
        return _invalid(spec, kind, cause)
    # DuckDB's own errors reach here only from reading the export (dlt wraps its destination's errors).
    if isinstance(cause, TerminalException) or (isinstance(cause, duckdb.Error) and not _transient_duckdb(cause)):
        return errors.LOAD_REJECTED(f"loading into {spec.describe(kind)}: {_say(cause)}")
    return errors.LOAD_FAILED(f"loading into {spec.describe(kind)} failed: {_say(cause)}")


def _transient_duckdb(e: BaseException) -> bool:
    import duckdb

    return isinstance(e, (duckdb.IOException, duckdb.OutOfMemoryException, duckdb.InterruptException))


def _invalid(spec: LoadSpec, kind: str, e: BaseException) -> ApplicationError:
    cause = _cause(e)
    if _is_configuration(cause):
        why = f"its configuration is missing or wrong: {_say(cause)}"
    else:
        why = f"it cannot be reached: {_say(cause)}"
    return errors.LOAD_DESTINATION_INVALID(f"load destination {spec.describe(kind)}: {why}")


def _cause(e: BaseException) -> BaseException:
    """dlt wraps a step's failure (PipelineStepFailed, then the job's): the innermost one says what happened."""
    seen = 0
    while seen < 8 and (inner := getattr(e, "exception", None) or e.__cause__) is not None:
        e, seen = inner, seen + 1
    return e


def _is_configuration(e: BaseException) -> bool:
    from dlt.common.configuration.exceptions import ConfigurationException
    from dlt.common.destination.exceptions import UnknownDestinationModule
    from dlt.common.exceptions import MissingDependencyException

    return isinstance(e, (ConfigurationException, MissingDependencyException, UnknownDestinationModule))


def _say(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:400]}"
