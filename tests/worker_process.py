"""A real worker subprocess (`python worker.py`) for end-to-end tests, stopped by its own pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "worker.py")], cwd=self.cwd, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
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
