"""Cheap exec health checks for the worker container (Kubernetes probes, compose healthcheck).

    python /app/healthcheck.py live    # PID 1 is the worker, and it is neither a zombie nor stopped
    python /app/healthcheck.py ready   # ...and it holds an established TCP connection to Temporal

The worker has no HTTP health endpoint yet (planned in issue 5: switch the
probes to `httpGet` when it lands). Until then these read /proc only: no
imports beyond the standard library, no network calls, a few milliseconds.

`ready` looks for an ESTABLISHED connection to the port of TEMPORAL_ADDRESS
(default 7233) in /proc/net/tcp{,6} of the pod's network namespace: a worker
long-polls its task queues over a gRPC connection that stays open, so no such
connection means it cannot reach the Temporal frontend.

Exit 0 healthy, 1 not (one line on stderr says why). `--pid N` checks another
process (for tests).
"""

from __future__ import annotations

import argparse
import os
import sys

WORKER_MARKERS = (b"worker.py", b"fullstory-jobs")
ESTABLISHED = "01"


def process_problem(pid: int) -> str | None:
    """Why process `pid` is not a live worker, or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError as e:
        return f"process {pid}: {e.strerror}"
    # The state first: a zombie's command line is empty.
    if state in ("Z", "X", "T", "t"):
        return f"process {pid} is in state {state} (zombie, dead or stopped)"
    if not any(marker in arg for arg in argv for marker in WORKER_MARKERS):
        return f"process {pid} is not the worker: {b' '.join(argv).decode(errors='replace').strip()!r}"
    return None


def temporal_port() -> int:
    address = os.environ.get("TEMPORAL_ADDRESS") or "127.0.0.1:7233"
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 7233


def established_to(port: int, net_dir: str = "/proc/net") -> bool:
    """Any ESTABLISHED TCP connection (IPv4 or IPv6) whose remote port is `port`."""
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(net_dir, name)) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # sl local_address rem_address st ...; addresses are HEXIP:HEXPORT
            if len(cols) > 3 and cols[3] == ESTABLISHED and int(cols[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="exec health check of the fullstory-jobs worker")
    parser.add_argument("check", choices=["live", "ready"])
    parser.add_argument("--pid", type=int, default=1, help="the worker's pid (default 1: the container's)")
    args = parser.parse_args(argv)
    problem = process_problem(args.pid)
    if problem is None and args.check == "ready":
        port = temporal_port()
        if not established_to(port):
            problem = f"no established connection to Temporal (port {port} of TEMPORAL_ADDRESS)"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
