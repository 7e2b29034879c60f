"""Shared bench plumbing: a dev server, a simulator, a worker subprocess, RSS sampling."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from helpers import WorkerProcess  # noqa: E402
from infra.data_converter import DATA_CONVERTER  # noqa: E402
from simulator import Simulator  # noqa: E402

API_KEY = "bench-key-0123456789"
VENV_BIN = Path(sys.executable).parent


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(VENV_BIN / "temporal"), data_converter=DATA_CONVERTER, dev_server_log_level="error"
    )
    try:
        yield env
    finally:
        await env.shutdown()


@contextlib.contextmanager
def worker_process(env: WorkflowEnvironment, sim: Simulator, data_dir: Path, **extra: str):
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
    w = WorkerProcess(
        log,
        {
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "FULLSTORY_API_KEY": API_KEY,
            "FULLSTORY_BASE_URL": sim.base_url,
            "FULLSTORY_EXPORT_BASE_URL": sim.base_url,
            "FULLSTORY_TASK_QUEUE": task_queue,
            "FULLSTORY_DATA_DIR": str(data_dir),
            "LOG_LEVEL": "WARNING",
            **extra,
        },
    )
    w.task_queue = task_queue
    w.start(timeout=60)
    try:
        yield w
    finally:
        w.stop()


class PeakRss:
    """Samples a process's RSS (and its children's) every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.cpu_start = self._cpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_seconds = self._cpu() - self.cpu_start


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def run(main_coro) -> None:
    """asyncio.run, then a hard exit: the Temporal core runtime can abort at interpreter teardown."""
    import os

    asyncio.run(main_coro)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
