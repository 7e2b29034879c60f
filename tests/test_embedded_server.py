"""One embedded dev server per `.temporal/temporal.db`: with `make run` running, `demo` uses its server and
worker and a second worker refuses to start another; `status` shows what a waiting run waits on; with
nothing running, `start`/`status`/`result` say what to do in one line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from helpers import WorkerProcess
from infra import embedded_temporal
from infra.settings import Settings, SettingsError
from infra.temporal_connection import load_temporal_target

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FULLSTORY_", "TEMPORAL_"))}
    return {**env, "HOME": env.get("HOME", "/tmp"), **extra}


def run(script: str, *args: str, cwd: Path, env: dict[str, str], timeout: float = 60):
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def dev_servers_on(directory: Path) -> set[int]:
    """Pids of `temporal` dev servers whose database is `directory`/.temporal/temporal.db."""
    found = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if not cmdline or Path(cmdline[0]).name != "temporal" or "start-dev" not in cmdline:
                continue
            db = next((Path(a) for a in cmdline if a.endswith("temporal.db")), None)
            if (
                db is not None
                and (db if db.is_absolute() else Path(proc.info["cwd"] or "/") / db).resolve()
                == (directory / ".temporal" / "temporal.db").resolve()
            ):
                found.add(proc.info["pid"])
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.e2e
def test_demo_uses_the_running_server_and_a_second_worker_refuses(tmp_path):
    env = clean_env(FULLSTORY_DATA_DIR=str(tmp_path / "data"))
    worker = WorkerProcess(tmp_path / "worker.log", env, cwd=tmp_path)
    try:
        worker.start(timeout=60)
        recorded = json.loads((tmp_path / ".temporal" / "endpoint.json").read_text())
        assert recorded["pid"] == worker.proc.pid
        servers = dev_servers_on(tmp_path)
        assert len(servers) == 1

        # A waiting run: `status` lists the pending wait with its attempt and last failure (the 5 s demo job).
        started = run("cli.py", "start", "batch-import", "--kind", "events", "--job-id", "W", cwd=tmp_path, env=env)
        assert started.returncode == 0, started.stderr
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = run("cli.py", "status", "fullstory-batch-events-W", cwd=tmp_path, env=env)
            assert status.returncode == 0, status.stderr
            out = json.loads(status.stdout)
            seen += [
                pa
                for pa in out["pending_activities"]
                if pa["activity_type"] == "wait_for_batch_job" and pa["last_failure"]
            ]
            if seen or out["status"] != "RUNNING":
                break
        assert seen, "never saw the wait pending with a failure"
        wait = seen[0]
        assert "PROCESSING" in wait["last_failure"] and "\n" not in wait["last_failure"]
        assert wait["attempt"] >= 1 and wait["state"] in ("SCHEDULED", "STARTED") and wait["scheduled_time"]
        assert set(wait) >= {
            "activity_type",
            "attempt",
            "state",
            "last_failure",
            "next_attempt_time",
            "last_heartbeat_time",
        }

        # `demo` while the worker runs: the recorded server and its worker, no server of its own.
        demo = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "demo"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        most = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                most[0] = max(most[0], len(dev_servers_on(tmp_path)))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            stdout, stderr = demo.communicate(timeout=60)
        finally:
            done.set()
            watcher.join(5)
        assert demo.returncode == 0, stderr[-2000:]
        assert f"already running here on {recorded['address']}" in stdout and "worker already polling" in stdout
        assert "Temporal dev server on" not in stdout and "SIMULATOR" not in stdout
        assert stdout.count('"status": "FAILED"') == 2  # the demo jobs' 3 failed records each
        assert most[0] == 1 and dev_servers_on(tmp_path) == servers
        assert "Failed to update shard" not in worker.log()

        # A second `make run` here: one line, exit 2, no second server.
        second = run("worker.py", cwd=tmp_path, env=env)
        assert second.returncode == 2, second.stderr
        assert "already runs on .temporal/temporal.db" in second.stderr and recorded["address"] in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        assert dev_servers_on(tmp_path) == servers
    finally:
        worker.stop()
    assert worker.proc.returncode == 0
    assert not dev_servers_on(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [["status", "some-id"], ["result", "some-id"], ["start", "operation", "--operation-id", "OP"]],
    ids=lambda a: a[0],
)
def test_nothing_running_says_what_to_do_in_one_line(tmp_path, argv):
    """A record left by a worker that is gone (SIGKILL): the CLI says to start `make run` or set TEMPORAL_ADDRESS."""
    (tmp_path / ".temporal").mkdir()
    (tmp_path / ".temporal" / "endpoint.json").write_text(
        json.dumps({"address": "127.0.0.1:1", "namespace": "default", "ui_url": "http://127.0.0.1:2"})
    )
    proc = run("cli.py", *argv, cwd=tmp_path, env=clean_env())
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and "tonic" not in line, line
    assert line.startswith("fullstory-jobs: cannot connect to Temporal at 127.0.0.1:1")
    assert "make run" in line and "TEMPORAL_ADDRESS" in line


async def test_a_server_left_behind_is_refused_by_a_worker_and_used_by_demo(dev_env, tmp_path, monkeypatch):
    """The record of a worker that was SIGKILLed, whose dev server (a child process) outlived it and answers."""
    monkeypatch.chdir(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / ".temporal").mkdir()
    (tmp_path / ".temporal" / "endpoint.json").write_text(
        json.dumps(
            {
                "address": dev_env.client.service_client.config.target_host,
                "namespace": "default",
                "ui_url": "http://127.0.0.1:1",
                "pid": gone.pid,
            }
        )
    )
    target, settings = load_temporal_target({}), Settings()
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(SettingsError, match=f"left behind by a worker that is gone \\(pid {gone.pid}\\)"):
            await embedded_temporal.start_embedded_temporal(stack, settings, target, None)
        client, used, shared = await embedded_temporal.start_embedded_temporal(
            stack, settings, target, None, reuse_running_server=True
        )
        assert shared and used.address == dev_env.client.service_client.config.target_host
    assert not (tmp_path / ".temporal" / "temporal.db").exists()


async def test_a_server_being_started_by_another_process_is_not_started_twice(tmp_path, monkeypatch):
    """Another process holds the database lock and has recorded no server (yet): wait for it, then one line."""
    import fcntl

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(embedded_temporal, "STARTING_WAIT", 1.0)
    (tmp_path / ".temporal").mkdir()
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open('.temporal/temporal.db.lock', 'w');"
            " fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "locked"
        async with contextlib.AsyncExitStack() as stack:
            with pytest.raises(SettingsError, match="another process holds .temporal/temporal.db.lock"):
                await embedded_temporal.start_embedded_temporal(stack, Settings(), load_temporal_target({}), None)
    finally:
        other.kill()
        other.wait(10)
    assert not (tmp_path / ".temporal" / "temporal.db").exists()
    with open(tmp_path / ".temporal" / "temporal.db.lock", "w") as f:  # released with its process
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
