"""The load steps the export workflows share (the `load` input; activities/table_load.py does the work).

- `check_load`: before any export is created, the destination is known, configured and reachable;
  else the workflow fails at once with LoadDestinationInvalid naming it.
- `load_window`: once a window's file is published complete, its rows replace whatever the table held of
  that window. A destination that is down is retried (a warehouse outage delays the window, it never
  skips it), for as long as a sync step may take.

Runs without `load` issue no new command, so histories from before it replay unchanged.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.table_load import TableLoadActivities
    from vocabulary.policies import CALL_RETRY, CALL_TIMEOUT, HEARTBEAT_TIMEOUT, UNATTENDED_STEP_BUDGET
    from vocabulary.table_load import CheckLoadParams, LoadedWindow, LoadFileParams, LoadFormat, LoadSpec
    from workflows.steps import ProgressWorkflow, StepText

LOAD_ATTEMPT_TIMEOUT = timedelta(hours=2)


async def check_load(wf: ProgressWorkflow, spec: LoadSpec | None, kind: str) -> None:
    if spec is None:
        return
    await wf.step(
        TableLoadActivities.check_load_destination,
        CheckLoadParams(load=spec, kind=kind),
        deadline=workflow.now() + CALL_TIMEOUT * 4,
        text=StepText(
            f"Check the load destination ({spec.describe(kind)})",
            f"checking the load destination {spec.describe(kind)} did not succeed in time",
        ),
    )


async def load_window(
    wf: ProgressWorkflow,
    spec: LoadSpec,
    *,
    kind: str,
    format: LoadFormat,
    file: str,
    sha256: str,
    window: str,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> LoadedWindow:
    """The file's rows replace the window's rows at the destination; then the destination records the window."""
    summary = f"Load window {window} into {spec.describe(kind)}"
    return await wf.step(
        TableLoadActivities.load_file,
        LoadFileParams(
            load=spec,
            kind=kind,
            format=format,
            file=file,
            sha256=sha256,
            window=window,
            window_start=window_start,
            window_end=window_end,
        ),
        deadline=workflow.now() + UNATTENDED_STEP_BUDGET,
        text=StepText(summary, f"{summary}: did not succeed within {UNATTENDED_STEP_BUDGET}"),
        start_to_close=LOAD_ATTEMPT_TIMEOUT,
        heartbeat=HEARTBEAT_TIMEOUT,
        retry=CALL_RETRY,  # a warehouse that is down: retried, backing off to a try every 2 minutes
    )
