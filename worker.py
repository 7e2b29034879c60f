"""The fullstory-jobs worker: its workflows, its activities, its workers (`make_workers`).

    python worker.py          # run the worker (what `make run` runs; same as `fullstory-jobs worker`)
    python worker.py demo     # any other command is handed to cli.py: `fullstory-jobs demo`

Hosting it (Temporal connection, the embedded dev server when no TEMPORAL_ADDRESS or
profile is configured, the simulator when no FULLSTORY_API_KEY, serving until
SIGTERM) is infra/worker_host.py, which the CLI uses too; this module and cli.py
do not import each other.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from activities.fullstory_client import FullstoryClient
from activities.legacy_export import BundleStoreActivities
from infra.logging_setup import add_log_level_flag
from infra.settings import Settings
from infra.worker_host import exit_now, serve_main
from workflows.registry import WORKFLOWS, activity_classes

GRACEFUL_SHUTDOWN = timedelta(seconds=20)  # SIGTERM: in-flight activities get this long (k8s grace period: 30 s)


def build_activities(fullstory: FullstoryClient, settings: Settings) -> dict[str, list[Callable[..., Any]]]:
    """The registry's activities, built once each, by task queue suffix ("" is the main queue)."""
    deps = ActivityDeps(
        fullstory,
        settings.fullstory_data_dir,
        settings.fullstory_allowed_locations,
        settings.fullstory_max_batches_in_progress,
        settings.fullstory_batch_slot_reclaim_seconds,
    )
    queues: dict[str, list[Callable[..., Any]]] = {}
    for cls in activity_classes():
        instance = cls(deps)
        methods = [
            getattr(instance, name)
            for name, member in vars(cls).items()
            if callable(member) and activity._Definition.from_callable(member) is not None
        ]
        queues.setdefault(getattr(cls, "task_queue_suffix", ""), []).extend(methods)
    return queues


def make_workers(client: Client, fullstory: FullstoryClient, settings: Settings) -> list[Worker]:
    """The main worker, and the bundle-downloads worker whose queue the server rate limits for all workers."""
    queues = build_activities(fullstory, settings)
    task_queue = settings.fullstory_task_queue
    # Heartbeats (page cursors, bytes downloaded) reach the server at least every second, so a worker
    # killed mid-walk or mid-download loses about a second of work, not the default 16 s.
    common: dict[str, Any] = dict(
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
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
            max_task_queue_activities_per_second=settings.fullstory_export_downloads_per_minute / 60.0,
            max_concurrent_activities=4,
            **common,
        ),
    ]


def main(argv: list[str]) -> int:
    """`python worker.py [--log-level L] [worker]` runs the worker (what `make run` runs).

    Any other command is the CLI's (`python worker.py demo` is `fullstory-jobs demo`): handed to cli.py
    by exec, so this module and cli.py never import each other.
    """
    parser = argparse.ArgumentParser(
        prog="worker.py",
        description="Run the fullstory-jobs worker: embedded "
        "Temporal dev server if no TEMPORAL_ADDRESS, simulator if no FULLSTORY_API_KEY.",
        epilog="Other commands (demo, start, status, result): see `fullstory-jobs --help`.",
    )
    add_log_level_flag(parser)
    parser.add_argument("command", nargs="?", default="worker", choices=["worker"], help="worker (the default)")
    i = 0  # the command is the first argument that is not --log-level or its value
    while i < len(argv) and argv[i].startswith("--log-level"):
        i += 1 if "=" in argv[i] else 2
    if i < len(argv) and argv[i] not in ("worker", "-h", "--help"):
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve().with_name("cli.py")), *argv])
    args = parser.parse_args(argv)
    return serve_main(make_workers, args.log_level)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
