"""The error catalogue: every `ApplicationError` type this project raises, declared once.

Callers (other services, the CLI, tests) match failures by these names, so a name never
changes once released. Raise one by calling it:

    raise INVALID_INPUT("requests_url: not valid JSON")
    raise BATCH_JOB_NOT_FINISHED("still PROCESSING", next_retry_delay=delay)

Whether Temporal retries is part of the declaration (`retryable`), and the workflows' retry
policies take their `non_retryable_error_types` from it (`NON_RETRYABLE`). A *benign* type is a
"not finished yet, check again later" that the UI and the logs must not show as a fault.
No I/O, no imports beyond temporalio: workflows and activities both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory


@dataclass(frozen=True)
class ErrorType:
    name: str
    retryable: bool
    meaning: str
    benign: bool = False

    def __call__(self, message: str, *details: Any, next_retry_delay: timedelta | None = None) -> ApplicationError:
        return ApplicationError(
            message,
            *details,
            type=self.name,
            non_retryable=not self.retryable,
            next_retry_delay=next_retry_delay if self.retryable else None,
            category=ApplicationErrorCategory.BENIGN if self.benign else ApplicationErrorCategory.UNSPECIFIED,
        )

    def __str__(self) -> str:
        return self.name


def _declare(name: str, retryable: bool, meaning: str, benign: bool = False) -> ErrorType:
    error = ErrorType(name, retryable, meaning, benign)
    assert name not in CATALOGUE, f"error type {name} declared twice"
    CATALOGUE[name] = error
    return error


CATALOGUE: dict[str, ErrorType] = {}

# --- Input and locations (the caller must fix something) -------------------------------------------
INVALID_INPUT = _declare("InvalidInput", False, "the workflow input or a file it names is invalid")
UNSUPPORTED_DESTINATION = _declare("UnsupportedDestination", False, "no filesystem for the location's scheme")
DESTINATION_NOT_WRITABLE = _declare("DestinationNotWritable", False, "the worker cannot write the destination")

# --- Fullstory's answers, by the HTTP error table (activities/fullstory_client.py) ----------------
FULLSTORY_BAD_REQUEST = _declare("FullstoryBadRequest", False, "HTTP 400")
FULLSTORY_UNAUTHORIZED = _declare("FullstoryUnauthorized", False, "HTTP 401: the API key was not accepted")
FULLSTORY_FORBIDDEN = _declare("FullstoryForbidden", False, "HTTP 403: the key's role may not do this")
FULLSTORY_NOT_FOUND = _declare("FullstoryNotFound", False, "HTTP 404")
FULLSTORY_UNPROCESSABLE = _declare("FullstoryUnprocessable", False, "HTTP 422")
FULLSTORY_CLIENT_ERROR = _declare("FullstoryClientError", False, "another HTTP 4xx")
FULLSTORY_RATE_LIMITED = _declare("FullstoryRateLimited", True, "HTTP 429: retried after Retry-After")
FULLSTORY_SERVER_ERROR = _declare("FullstoryServerError", True, "HTTP 500 or an unknown 5xx")
FULLSTORY_UNAVAILABLE = _declare("FullstoryUnavailable", True, "HTTP 502/503/504, connection reset or timeout")
FULLSTORY_MALFORMED_RESPONSE = _declare("FullstoryMalformedResponse", True, "a 2xx body without the documented shape")
FULLSTORY_PAGE_LOOP = _declare("FullstoryPageLoop", False, "a page walk got the same page token twice")

# --- Waits: "not finished yet" (benign, retried after next_retry_delay) ---------------------------
BATCH_JOB_NOT_FINISHED = _declare("BatchJobNotFinished", True, "the batch job is still PROCESSING", benign=True)
OPERATION_NOT_FINISHED = _declare("OperationNotFinished", True, "the operation is still running", benign=True)
RESULTS_NOT_READY = _declare("ResultsNotReady", True, "HTTP 202 from /errors or /imports", benign=True)

# --- Outcomes that end a workflow ------------------------------------------------------------------
BATCH_JOB_TIMEOUT = _declare("BatchJobTimeout", False, "the batch job did not finish before `timeout`")
OPERATION_TIMEOUT = _declare("OperationTimeout", False, "the operation did not finish before `timeout`")
OPERATION_FAILED = _declare("OperationFailed", False, "Fullstory reports the operation FAILED")
EXPORT_HAS_NO_RESULTS = _declare("ExportHasNoResults", False, "a COMPLETED export names no file")
SYNC_TIMEOUT = _declare("DataExportSyncTimeout", False, "a sync step kept failing for its whole budget")
SEGMENT_SYNC_WINDOW_FAILED = _declare(
    "SegmentExportWindowFailed", False, "a window's export kept failing: the segment export sync stops at it"
)
SEGMENT_SYNC_TIMEOUT = _declare("SegmentExportSyncTimeout", False, "a segment sync step kept failing for its budget")

# --- Downloads (retried: a new attempt resumes or starts over) ------------------------------------
EXPORT_NOT_READY = _declare("ExportNotReady", True, "the export has no download location yet")
DOWNLOAD_INCOMPLETE = _declare("DownloadIncomplete", True, "the body ended early or a Range answer was wrong")
DOWNLOAD_URL_REJECTED = _declare("DownloadUrlRejected", True, "the storage host kept refusing fresh URLs")
DOWNLOAD_CORRUPT = _declare("DownloadCorrupt", True, "the file is not a valid gzip stream (downloaded anew)")

# --- Loading exports as tables (activities/table_load.py) ------------------------------------------
LOAD_DESTINATION_INVALID = _declare(
    "LoadDestinationInvalid", False, "the load destination is unknown, not configured, or cannot be reached"
)
LOAD_FILE_CHANGED = _declare("LoadFileChanged", False, "the published file is not the one downloaded (sha256)")
LOAD_REJECTED = _declare(
    "LoadRejected", False, "the file's rows cannot be read, or the destination refuses them for good"
)
LOAD_FAILED = _declare("LoadFailed", True, "the destination failed the load or is down (retried)")

# Temporal's retry policies never retry these (derived, never listed by hand).
NON_RETRYABLE: list[str] = [e.name for e in CATALOGUE.values() if not e.retryable]
