"""What workflows and activities pass each other, and Fullstory's own payloads.

Kept in `workflows/` (no I/O here) so workflow code can import the types while
activities stay out of the workflow sandbox. Fullstory payload models are
tolerant: unknown fields are ignored, optional ones may be absent.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflows.models import BatchJobStatus, BatchKind

def redact_url(url: object) -> str:
    """A URL fit for logs, errors, history and the UI: no query string (signed URLs carry credentials
    there), no fragment, no userinfo. A plain path stays as it is."""
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


# Activity names: the workflow refers to activities by these, never by import.
CREATE_BATCH_JOB = "create_batch_job"
WAIT_FOR_BATCH_JOB = "wait_for_batch_job"
COLLECT_BATCH_RECORDS = "collect_batch_records"

# Error types (ApplicationError.type), asserted by name in tests and callers.
INVALID_INPUT = "InvalidInput"
BATCH_JOB_NOT_FINISHED = "BatchJobNotFinished"  # benign: "not done yet, check again later"
RESULTS_NOT_READY = "ResultsNotReady"  # benign: 202 from /errors or /imports
BATCH_JOB_TIMEOUT = "BatchJobTimeout"


class FullstoryPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class BatchJob(FullstoryPayload):
    id: str
    status: BatchJobStatus
    created: datetime | None = None
    finished: datetime | None = None


class BatchJobDetails(FullstoryPayload):
    """`GET /v2/{kind}/batch/{id}`: `errors` is absent unless the job failed."""

    imports: int = 0
    errors: int = 0
    job: BatchJob

    @field_validator("imports", "errors", mode="before")
    @classmethod
    def _int_or_zero(cls, v: Any) -> int:
        return 0 if v in (None, "") else int(v)


class CreateBatchJobResponse(FullstoryPayload):
    job: BatchJob


class RecordsPage(FullstoryPayload):
    """One page of `/errors` or `/imports`: `total_records` is a string in the docs."""

    results: list[dict[str, Any]] = Field(default_factory=list)
    total_records: int | None = None
    next_page_token: str | None = None

    @field_validator("total_records", mode="before")
    @classmethod
    def _count(cls, v: Any) -> int | None:
        return None if v in (None, "") else int(v)


class CreateBatchJobParams(BaseModel):
    kind: BatchKind
    requests: list[dict[str, Any]] | None = None
    requests_url: str | None = None
    shared: dict[str, Any] | None = None
    idempotency_key: str


class WaitForBatchJobParams(BaseModel):
    kind: BatchKind
    job_id: str
    max_poll_seconds: float = 60.0


class CollectBatchRecordsParams(BaseModel):
    kind: BatchKind
    job_id: str
    which: Literal["errors", "imports"]
    destination: str | None = None


class CollectedRecords(BaseModel):
    location: str
    records: int
    bytes: int
    codes: dict[str, int] = Field(default_factory=dict)
    pages: int = 0
    total_records_reported: int | None = None


# --- Operations and segment exports -------------------------------------------------

CREATE_SEGMENT_EXPORT = "create_segment_export"
WAIT_FOR_OPERATION = "wait_for_operation"
OPERATION_NOT_FINISHED = "OperationNotFinished"  # benign: "still running, check again later"
OPERATION_FAILED = "OperationFailed"
OPERATION_TIMEOUT = "OperationTimeout"


class CreateSegmentExportParams(BaseModel):
    body: dict[str, Any]  # Fullstory's camelCase request, built from SegmentExportInput
    idempotency_key: str


class WaitForOperationParams(BaseModel):
    operation_id: str
    known_state: str | None = None
    known_pct: float | None = None
    checks_before: int = 0
    max_poll_seconds: float = 60.0
    report_pct_step: float = 25.0


class OperationSnapshot(BaseModel):
    """What `wait_for_operation` returns: the operation when it ended or made visible progress."""

    operation: Any  # workflows.models.Operation as a dict (camelCase-free, snake_case)
    checks: int


# --- Legacy data export -------------------------------------------------------------

LIST_EXPORT_BUNDLES = "list_export_bundles"
STORE_EXPORT_BUNDLE = "store_export_bundle"
SYNC_TIMEOUT = "DataExportSyncTimeout"


class ExportBundle(FullstoryPayload):
    """One entry of `/api/v1/export/list`: Fullstory's capitalised names, unix seconds."""

    start: int = Field(alias="Start")
    stop: int = Field(alias="Stop")
    id: str = Field(alias="ID")

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> str:
        return str(v)

    def filename(self) -> str:
        return f"{self.start}-{self.stop}-{self.id}.json.gz"


class StoreExportBundleParams(BaseModel):
    bundle: ExportBundle
    destination: str | None = None


class StoredBundle(BaseModel):
    location: str
    bytes: int
    sha256: str
    skipped: bool = False  # already stored intact (per the manifest): not downloaded again


# --- Downloads (segment exports and legacy bundles share one activity) --------------

DOWNLOAD_TO_DESTINATION = "download_to_destination"
DOWNLOAD_CORRUPT = "DownloadCorrupt"


class SearchExportSource(BaseModel):
    kind: Literal["search_export"] = "search_export"
    export_id: str

    def describe(self) -> str:
        return f"search export {self.export_id}"

    def key(self) -> str:
        """Tells this source's file from another's of the same name."""
        return self.export_id

    def default_filename(self) -> str:
        return f"export-{self.export_id}.gz"


class OperationSource(BaseModel):
    kind: Literal["operation"] = "operation"
    operation_id: str

    def describe(self) -> str:
        return f"operation {self.operation_id}"

    def key(self) -> str:
        return self.operation_id

    def default_filename(self) -> str:
        return f"operation-{self.operation_id}.gz"


class LegacyBundleSource(BaseModel):
    kind: Literal["legacy_bundle"] = "legacy_bundle"
    bundle_id: str

    @field_validator("bundle_id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> str:
        return str(v)

    def describe(self) -> str:
        return f"bundle {self.bundle_id}"

    def key(self) -> str:
        return self.bundle_id

    def default_filename(self) -> str:
        return f"bundle-{self.bundle_id}.json.gz"


class UrlSource(BaseModel):
    kind: Literal["url"] = "url"
    url: str

    def describe(self) -> str:
        return redact_url(self.url)

    def key(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:12]

    def default_filename(self) -> str:
        return PurePosixPath(urlsplit(self.url).path).name or "download.gz"


DownloadSource = Annotated[
    SearchExportSource | OperationSource | LegacyBundleSource | UrlSource, Field(discriminator="kind")
]


class DownloadParams(BaseModel):
    source: DownloadSource
    destination: str | None = None
    subdir: str | None = None
    filename: str | None = None  # final name; else Content-Disposition (sanitised); else from the source
    verify_gzip: bool = True


class DownloadResult(BaseModel):
    location: str
    bytes: int
    sha256: str
    content_type: str | None = None
    filename: str
