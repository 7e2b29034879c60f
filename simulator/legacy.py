"""The legacy Data Export API: list bundles from a time, download one, 2 downloads a minute."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from .downloads import Download
from .protocol import Request, Response, error, json_response
from .routing import EXPORT_KEY, Router
from .state import SimState

LIST_LIMIT = 20
FIRST_ID = 123_456_789


@dataclass
class Bundle:
    id: str  # digits: the API's "ID" is a number
    start: int
    stop: int
    available_at: float
    download: Download


class TokenBucket:
    """A burst budget refilling at a steady rate, on the simulator's clock."""

    def __init__(self) -> None:
        self.tokens: float | None = None
        self.last = 0.0
        self._lock = threading.Lock()

    def take(self, now: float, burst: float, per_minute: float) -> float:
        """0 when a token was taken, else the seconds until the next one."""
        rate = per_minute / 60.0
        with self._lock:
            if self.tokens is None:
                self.tokens, self.last = float(burst), now
            self.tokens = min(float(burst), self.tokens + max(0.0, now - self.last) * rate)
            self.last = max(self.last, now)
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / rate if rate > 0 else 3600.0


class LegacyExport:
    def __init__(self, sim: SimState) -> None:
        self.sim = sim
        self.bundles: dict[str, Bundle] = {}
        self.bucket = TokenBucket()
        self._lock = threading.Lock()
        self._next_id = FIRST_ID

    def add_bundles(
        self,
        count: int,
        size: int = 1 << 20,
        start: int = 1_700_000_000,
        span: int = 3600,
        available_at: float | None = None,
        **download_options: Any,
    ) -> list[str]:
        """Bundle i covers [start + i*span, start + (i+1)*span); options as Download's (range_support, ...)."""
        ids = []
        now = self.sim.clock_now() if available_at is None else float(available_at)
        with self._lock:
            for i in range(count):
                self._next_id += 7919  # not consecutive, like real ids
                bundle_id = str(self._next_id)
                times = (
                    {"table_time": (start + i * span, start + (i + 1) * span)}
                    if "table_rows" in download_options
                    else {}
                )
                dl = Download(
                    bundle_id, int(size), "DataExport.json.gz", "json", seed=self._next_id, **times, **download_options
                )
                self.bundles[bundle_id] = Bundle(bundle_id, start + i * span, start + (i + 1) * span, now, dl)
                ids.append(bundle_id)
        return ids

    def register(self, router: Router) -> None:
        for method in ("GET", "POST"):  # the docs: query parameters, or a JSON body on POST
            router.add(method, "/api/v1/export/list", self.list, EXPORT_KEY)
            router.add(method, "/api/v1/export/get", self.get, EXPORT_KEY)

    @staticmethod
    def params(req: Request) -> dict[str, Any]:
        if req.method == "POST" and req.body:
            try:
                body = req.json()
            except ValueError:
                return {}
            return body if isinstance(body, dict) else {}
        return dict(req.query)

    def list(self, req: Request) -> Response:
        try:
            start = int(self.params(req).get("start"))
        except (TypeError, ValueError):
            return error(400, "start is required: unix seconds", "invalid_argument")
        now = self.sim.clock_now()
        found = sorted(
            (b for b in self.bundles.values() if b.stop > start and b.available_at <= now),
            key=lambda b: (b.start, b.stop),
        )[:LIST_LIMIT]
        return json_response({"exports": [{"Start": b.start, "Stop": b.stop, "ID": int(b.id)} for b in found]})

    def get(self, req: Request) -> Response:
        wait = self.bucket.take(self.sim.clock_now(), self.sim.legacy_burst, self.sim.legacy_per_minute)
        if wait > 0:
            with self._lock:
                self.sim.legacy_429s += 1
            return error(429, headers={"Retry-After": str(max(1, math.ceil(wait - 1e-6)))})
        bundle = self.bundles.get(str(self.params(req).get("id", "")))
        if bundle is None or bundle.available_at > self.sim.clock_now():
            return error(404, f"no data export bundle {self.params(req).get('id')!r}")
        return bundle.download.serve(req)
