"""The registry: every workflow this worker runs, one entry each.

The worker registers each entry's workflow and activities; the CLI makes `start <command>` from
its input model; the schema generator writes its input and result schemas; `start_texts` gives
the UI's static summary and details. Adding a workflow: its workflow module, its activities
module, one entry here, and its tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from activities.batch_job import BatchActivities
from activities.bulk_import import BulkActivities
from activities.download import DownloadActivities
from activities.download_tokens import DownloadTokenActivities
from activities.legacy_export import BundleStoreActivities, LegacyExportActivities
from activities.locations import LocationActivities
from activities.operations import Operation, OperationActivities
from activities.org_batch_limit import BatchSlotActivities
from activities.segment_sync import SegmentSyncActivities
from activities.table_load import TableLoadActivities
from vocabulary.texts import MAX_SUMMARY, Row, current_details, escape, shorten
from workflows import (
    batch_job,
    batch_job_input,
    bulk_import,
    bulk_import_input,
    bulk_narration,
    data_export_input,
    data_export_sync,
    download_tokens,
    operation,
    org_batch_limit,
    segment_export,
    segment_export_sync,
    segment_sync_input,
)


@dataclass(frozen=True)
class Job:
    workflow: type  # the @workflow.defn class
    command: str  # `fullstory-jobs start <command>`
    title: str  # how a person names it
    input: type[BaseModel]
    result: type[BaseModel]
    # The workflow id for a start with this input; `unique` is a fresh suffix for jobs with no natural key.
    workflow_id: Callable[[Any, str], str]
    # (summary, headline, rows) of the UI's static texts for this input.
    describe: Callable[[Any], tuple[str, str, list[Row]]]
    activities: tuple[type, ...]  # activities classes, each built with ActivityDeps
    hidden_fields: frozenset[str] = field(default_factory=frozenset)  # inputs the CLI does not offer
    startable: bool = True  # False: run by the worker, started by other workflows only (no `start` command)

    @property
    def name(self) -> str:
        """The workflow type: every workflow is registered under its class name (tests/test_contract.py checks)."""
        return self.workflow.__name__

    def new_workflow_id(self, args: BaseModel) -> str:
        return self.workflow_id(args, uuid.uuid4().hex[:12])


JOBS: tuple[Job, ...] = (
    Job(
        batch_job.BatchImportWorkflow,
        "batch-import",
        "Batch import",
        batch_job_input.BatchImportInput,
        batch_job_input.BatchImportResult,
        batch_job_input.workflow_id_for,
        batch_job_input.start_texts,
        (BatchActivities, BatchSlotActivities, LocationActivities),
        hidden_fields=batch_job_input.HIDDEN_FIELDS,
    ),
    Job(
        bulk_import.BulkImportWorkflow,
        "bulk-import",
        "Bulk import",
        bulk_import_input.BulkImportInput,
        bulk_import_input.BulkImportResult,
        bulk_import_input.workflow_id_for,
        bulk_narration.start_texts,
        (BulkActivities, LocationActivities),
        hidden_fields=bulk_import_input.HIDDEN_FIELDS,
    ),
    Job(
        org_batch_limit.BatchSlotsWorkflow,
        "batch-slots",
        "Org-wide batch slots",
        org_batch_limit.BatchSlotsInput,
        org_batch_limit.BatchSlotsResult,
        org_batch_limit.workflow_id_for,
        org_batch_limit.start_texts,
        (BatchSlotActivities,),
        hidden_fields=org_batch_limit.HIDDEN_FIELDS,
        startable=False,  # started on demand by request_batch_slot (its id derives from the API key)
    ),
    Job(
        segment_export.SegmentExportWorkflow,
        "segment-export",
        "Segment export",
        segment_export.SegmentExportInput,
        segment_export.SegmentExportResult,
        segment_export.workflow_id_for,
        segment_export.start_texts,
        (OperationActivities, DownloadActivities, LocationActivities, TableLoadActivities),
    ),
    Job(
        operation.OperationWorkflow,
        "operation",
        "Fullstory operation",
        operation.OperationInput,
        Operation,
        operation.workflow_id_for,
        operation.start_texts,
        (OperationActivities,),
    ),
    Job(
        data_export_sync.DataExportSyncWorkflow,
        "data-export-sync",
        "Legacy data export sync",
        data_export_input.DataExportSyncInput,
        data_export_input.DataExportSyncResult,
        data_export_input.workflow_id_for,
        data_export_input.start_texts,
        (
            LegacyExportActivities,
            BundleStoreActivities,
            DownloadTokenActivities,
            LocationActivities,
            TableLoadActivities,
        ),
        hidden_fields=data_export_input.HIDDEN_FIELDS,
    ),
    Job(
        download_tokens.DownloadTokensWorkflow,
        "download-tokens",
        "Download tokens",
        download_tokens.DownloadTokensInput,
        download_tokens.DownloadTokensResult,
        download_tokens.workflow_id_for,
        download_tokens.start_texts,
        (DownloadTokenActivities,),
        hidden_fields=download_tokens.HIDDEN_FIELDS,
        startable=False,  # started on demand by request_download_token (its id derives from the API key)
    ),
    Job(
        segment_export_sync.SegmentExportSyncWorkflow,
        "segment-export-sync",
        "Segment export sync",
        segment_sync_input.SegmentExportSyncInput,
        segment_sync_input.SegmentExportSyncResult,
        segment_sync_input.workflow_id_for,
        segment_sync_input.start_texts,
        (SegmentSyncActivities, OperationActivities, DownloadActivities, LocationActivities, TableLoadActivities),
        hidden_fields=segment_sync_input.HIDDEN_FIELDS,
    ),
)

BY_NAME: Mapping[str, Job] = {job.name: job for job in JOBS}
BY_COMMAND: Mapping[str, Job] = {job.command: job for job in JOBS if job.startable}
WORKFLOWS: list[type] = [job.workflow for job in JOBS]


def activity_classes() -> list[type]:
    """Every activities class any workflow needs, once each, in registry order."""
    return list(dict.fromkeys(cls for job in JOBS for cls in job.activities))


def start_texts(workflow_type: str, args: BaseModel | Mapping[str, Any]) -> tuple[str, str]:
    """(static_summary, static_details) for starting `workflow_type` with `args`:

        summary, details = start_texts("BatchImportWorkflow", {"kind": "events", "job_id": "abc123="})
        await client.start_workflow(..., static_summary=summary, static_details=details)

    `args` is the input model or the plain JSON dict a caller would send. Never raises: an input the
    workflow will reject still gets a summary (the workflow then fails with InvalidInput). Inputs may
    carry personal data (batch `requests`, `shared`): those are shown by count only.
    """
    job = BY_NAME.get(workflow_type)
    if job is None:
        fields = sorted(args.keys()) if isinstance(args, Mapping) else []
        return shorten(workflow_type, MAX_SUMMARY), current_details(
            workflow_type, [("Input fields", escape(shorten(", ".join(map(str, fields)), 200)) or "none")]
        )
    if not isinstance(args, job.input):
        try:
            args = job.input.model_validate(args.model_dump() if isinstance(args, BaseModel) else args)
        except ValidationError as e:
            bad = ", ".join(".".join(map(str, err["loc"])) or "(input)" for err in e.errors(include_input=False))
            return (
                f"{job.title} (invalid input)",
                current_details(
                    f"{job.title}: invalid input; the workflow will fail with InvalidInput",
                    [("Fields to fix", escape(shorten(bad, 300)))],
                ),
            )
    summary, headline, rows = job.describe(args)
    return shorten(summary, MAX_SUMMARY), current_details(headline, rows)
