"""Signal-with-start from an activity: send a request to the long-running workflow of this API key and task queue.

The org-wide limits are each one durable workflow per API key and task queue: the download token bucket
(activities/download_tokens.py) and the batch slots (activities/org_batch_limit.py). An activity asks it
for something by signal-with-start: the signal goes to the running workflow, or starts it (with this
worker's settings as its input) and is delivered first. The answer comes later, as a signal to the asker.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel
from temporalio import activity


async def signal_with_start_per_key(
    workflow: str,
    workflow_id: Callable[[str, str], str],
    key_fingerprint: str,
    first_input: BaseModel,
    signal: str,
    request: BaseModel,
    summary: str,
) -> str:
    """Signal `request` to the `workflow` whose id is `workflow_id(task_queue, key_fingerprint)`, on this
    activity's task queue, starting it with `first_input` (and `summary` in the UI) if it does not run;
    returns that workflow id (the asker signals it again there, e.g. to release)."""
    task_queue = activity.info().task_queue
    target = workflow_id(task_queue, key_fingerprint)
    await activity.client().start_workflow(
        workflow,
        first_input,
        id=target,
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=[request],
        static_summary=summary,
    )
    return target
