"""The composition root: settings -> the Fullstory client -> activity deps -> the workers.

The one place where infra/ (settings, the Temporal runtime) meets activities/ and workflows/: the
entry point (cli.py) hands `run_workers` to infra/worker_host.py's `serve`, which knows nothing of
either. Tests and the screenshot script build their workers with `make_workers`, as production does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from activities.fullstory_client import FullstoryClient
from activities.legacy_export import BundleStoreActivities
from activities.locations import Locations
from activities.metrics import Metrics
from infra.settings import Settings
from infra.versioning import deployment_config, deployment_version, make_first_version_current, workflow_runner
from infra.worker_host import Services
from vocabulary.policies import DEFAULT_DOWNLOAD_BURST
from workflows.registry import WORKFLOWS, activity_classes

log = logging.getLogger("fullstory_jobs.worker")
GRACEFUL_SHUTDOWN = timedelta(seconds=20)  # SIGTERM: in-flight activities get this long (k8s grace period: 30 s)


def fullstory_client(settings: Settings, api_key: str, metrics: Metrics | None = None) -> FullstoryClient:
    """The one HTTP client of a worker process, from the settings."""
    return FullstoryClient(
        api_key,
        settings.fullstory_base_url,
        settings.fullstory_export_base_url,
        timeout=settings.fullstory_http_timeout,
        max_connections=settings.fullstory_max_concurrent_activities,
        metrics=metrics,
    )


def activity_deps(fullstory: FullstoryClient, settings: Settings) -> ActivityDeps:
    """What every activities class is built with, from the settings (each default is the setting's)."""
    return ActivityDeps(
        client=fullstory,
        locations=allowed_locations(settings),
        max_batches_in_progress=settings.fullstory_max_batches_in_progress,
        batch_slot_reclaim_seconds=settings.fullstory_batch_slot_reclaim_seconds,
        export_downloads_per_minute=settings.fullstory_export_downloads_per_minute,
        export_download_burst=DEFAULT_DOWNLOAD_BURST,
    )


def allowed_locations(settings: Settings) -> Locations:
    return Locations(settings.fullstory_data_dir, settings.fullstory_allowed_locations)


def build_activities(deps: ActivityDeps) -> dict[str, list[Callable[..., Any]]]:
    """The registry's activities, built once each, by task queue suffix ("" is the main queue).

    An activities class's public coroutine methods are its activities (the Worker refuses one that is
    not an `@activity.defn`, so a helper method left public fails at start, not in production).
    """
    queues: dict[str, list[Callable[..., Any]]] = {}
    for cls in activity_classes():
        instance = cls(deps)
        methods = [
            getattr(instance, name)
            for name, member in vars(cls).items()
            if not name.startswith("_") and inspect.iscoroutinefunction(member)
        ]
        queues.setdefault(getattr(cls, "task_queue_suffix", ""), []).extend(methods)
    return queues


def make_workers(client: Client, fullstory: FullstoryClient, settings: Settings) -> list[Worker]:
    """The main worker, and the bundle-downloads worker (its pace is the download-token bucket's,
    workflows/download_tokens.py, not a server-side rate limit, which a partitioned queue splits)."""
    queues = build_activities(activity_deps(fullstory, settings))
    task_queue = settings.fullstory_task_queue
    # Heartbeats (page cursors, bytes downloaded) reach the server at least every second, so a worker
    # killed mid-walk or mid-download loses about a second of work, not the default 16 s.
    common: dict[str, Any] = dict(
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
        # FULLSTORY_DEPLOYMENT_NAME set: both workers run as one Worker Deployment Version (None: unversioned).
        deployment_config=deployment_config(settings),
        workflow_runner=workflow_runner(settings),  # unversioned: without the workflows' versioning behaviour
    )
    downloads = queues.pop(BundleStoreActivities.task_queue_suffix)
    assert set(queues) == {""}, f"activities on a task queue no worker polls: {sorted(queues)}"
    return [
        Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=queues[""],
            max_concurrent_activities=settings.fullstory_max_concurrent_activities,
            **common,
        ),
        Worker(
            client,
            task_queue=BundleStoreActivities.task_queue(task_queue),
            activities=downloads,
            max_concurrent_activities=4,
            **common,
        ),
    ]


@contextlib.asynccontextmanager
async def run_workers(rt: Services) -> AsyncIterator[None]:
    """The workers, polling until the block ends; none when `rt.api_key` is None (another process's worker
    serves the task queue)."""
    if rt.api_key is None:
        yield
        return
    fullstory = fullstory_client(rt.settings, rt.api_key, Metrics(rt.runtime.metric_meter))
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(fullstory.aclose)
        for w in make_workers(rt.client, fullstory, rt.settings):
            await stack.enter_async_context(w)
        version = deployment_version(rt.settings)
        if version is not None:
            log.info("worker deployment version %s", version.to_canonical_string())
            bootstrap = asyncio.create_task(make_first_version_current(rt.client, version))
            stack.push_async_callback(cancel, bootstrap)
        yield


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
