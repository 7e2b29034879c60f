"""python -m simulator: the Fullstory simulator on its own, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--api-key", default="test-key", help="the admin API key requests must carry")
    parser.add_argument("--job-seconds", type=float, default=3.0, help="how long created jobs and exports run")
    parser.add_argument("--job-errors", type=int, default=3, help="failed records in each created batch job")
    parser.add_argument(
        "--adopt-unknown-ids",
        action="store_true",
        help="demo mode: any batch job or operation id asked about exists (made up on first sight)",
    )
    args = parser.parse_args(argv)

    sim = Simulator(api_key=args.api_key, host=args.host, port=args.port)
    sim.batch_defaults.update(duration=args.job_seconds, errors=args.job_errors)
    sim.export_defaults.update(duration=args.job_seconds, progress_steps=4)
    sim.adopt_unknown_ids = args.adopt_unknown_ids
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    print(f"simulator listening on {sim.base_url}", flush=True)
    print(
        f"  API key: {args.api_key} (Authorization: Basic <key>); control API under {sim.base_url}/_sim/",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
