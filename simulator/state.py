"""What the simulator's parts share: the clock, the knobs, keys, faults, routes and the record of requests.

The parts (batch.py, exports.py, legacy.py, handler.py, control.py) take a SimState and import this
module, never server.py; the Simulator in server.py is a SimState that also listens on a socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .faults import Fault, FaultRules
from .protocol import Request
from .routing import Router

ROLES = ("admin", "architect", "standard")


@dataclass
class RequestRecord:
    method: str
    path: str  # without the query
    query: dict[str, str]
    route: str | None  # the route template, e.g. "/v2/{kind}/batch/{job_id}"; None when no route matched
    status: int
    headers: dict[str, str]  # lower-case names, as received
    at: float  # sim.clock() when it arrived
    params: dict[str, str] = field(default_factory=dict)


class SimState:
    def __init__(self, api_key: str, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listening = False  # the Simulator sets it in start() and stop()
        self.keys: dict[str, str] = {api_key: "admin"}
        self.clock: Callable[[], float] = time.time
        # Knobs (plain attributes: set them in a test).
        self.batch_defaults: dict[str, Any] = {}
        self.page_delay = 0.0  # real seconds slept before each errors/imports page
        self.last_page_token_style = "absent"  # or "empty": how the last page says it is the last
        self.status_errors_field = "failed_only"  # or "always" (the Swagger spec's "required")
        self.export_defaults: dict[str, Any] = {}  # add_operation() keywords for POST /segments/v1/exports
        self.fail_windows: list[str] = []  # exports whose timeRange starts at one of these (RFC 3339) end FAILED
        # Demo mode: a batch job or operation id the simulator never saw is made up on first sight (from
        # batch_defaults / export_defaults), so `fullstory-jobs start ... --job-id X` has a job to watch.
        self.adopt_unknown_ids = False
        self.legacy_burst = 50  # legacy bundle downloads: burst budget...
        self.legacy_per_minute = 2.0  # ...refilling at this rate
        self.legacy_429s = 0
        self.storage_bytes_per_second: float | None = None  # throttle file downloads (None: full speed)
        self.requests: list[RequestRecord] = []
        self.faults = FaultRules()
        self.router = Router()
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        if not self.listening:
            raise RuntimeError("the simulator is not started: call start() or use it as a context manager")
        return f"http://{self.host}:{self.port}"

    def clock_now(self) -> float:
        return float(self.clock())

    # --- keys, faults, stats ------------------------------------------------------------------------

    def add_key(self, key: str, role: str = "admin") -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self.keys[key] = role

    def fault(
        self,
        path_regex: str,
        kind: str = "status",
        count: int = 1,
        status: int = 503,
        retry_after: str | int | None = None,
        method: str | None = None,
        after_bytes: int = 0,
        body: dict | None = None,
    ) -> Fault:
        return self.faults.add(Fault(path_regex, kind, count, status, retry_after, method, after_bytes, body))

    def fault_burst(
        self,
        path_regex: str,
        status: int = 503,
        count: int = 5,
        retry_after: str | None = None,
        method: str | None = None,
    ) -> Fault:
        return self.fault(path_regex, "status", count, status, retry_after, method)

    def record(self, req: Request, route: str | None, status: int) -> None:
        rec = RequestRecord(req.method, req.path, req.query, route, status, req.headers, self.clock_now(), req.params)
        with self._lock:
            self.requests.append(rec)

    def count(self, method: str | None = None, route: str | None = None) -> int:
        method = method.upper() if method else None
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and (route is None or r.route == route)
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_route: dict[str, dict[str, int]] = {}
            for r in self.requests:
                by_method = by_route.setdefault(r.route or "(no route)", {})
                by_method[r.method] = by_method.get(r.method, 0) + 1
            return {"requests": len(self.requests), "routes": by_route}

    def reset_stats(self) -> None:
        """Forget the requests seen so far (and the legacy 429 count); jobs, files and faults stay."""
        with self._lock:
            self.requests.clear()
            self.legacy_429s = 0
