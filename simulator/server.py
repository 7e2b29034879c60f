"""The Simulator: a Fullstory look-alike on a real loopback socket, with per-test knobs and request stats."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from .batch import BatchImports, BatchJob
from .control import register_control
from .exports import Exports, Operation
from .faults import Fault, FaultRules
from .handler import SimulatorHandler
from .legacy import Bundle, LegacyExport
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.connections: set[socket.socket] = set()
        super().__init__(address, handler)


class Simulator:
    """Fullstory's asynchronous APIs on http://127.0.0.1:PORT. Use as a context manager or start()/stop()."""

    def __init__(self, api_key: str = "test-key", host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
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
        self.batch = BatchImports(self)
        self.batch.register(self.router)
        self.exports = Exports(self)
        self.exports.register(self.router)
        self.legacy = LegacyExport(self)
        self.legacy.register(self.router)
        register_control(self, self.router)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        handler = type("Handler", (SimulatorHandler,), {"sim": self})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fullstory-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(server.connections):  # idle keep-alive connections: end them too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
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

    # --- batch imports ------------------------------------------------------------------------------

    @property
    def jobs(self) -> dict[str, BatchJob]:
        return self.batch.jobs

    def add_batch_job(
        self,
        kind: str = "events",
        job_id: str | None = None,
        duration: float = 0.0,
        imports: int = 10,
        errors: int = 0,
        page_size: int = 100,
        final_status: str | None = None,
        error_codes: tuple[str, ...] = ("invalid_field", "required_field"),
        retry_after_while_processing: float | str | None = None,
        imports_page_size: int | None = None,
    ) -> str:
        return self.batch.add(
            kind,
            job_id,
            duration,
            imports,
            errors,
            page_size,
            final_status,
            error_codes,
            retry_after_while_processing,
            imports_page_size,
        )

    def expected_records(self, job_id: str, which: str = "errors") -> list[dict]:
        return self.batch.expected_records(job_id, which)

    # --- operations and segment exports -------------------------------------------------------------

    @property
    def operations(self) -> dict[str, Operation]:
        return self.exports.operations

    def add_operation(
        self,
        op_id: str | None = None,
        duration: float = 0.0,
        final_state: str = "COMPLETED",
        error_details: str | None = None,
        progress_steps: int = 4,
        results_shape: str = "searchExportId",
        size: int = 1 << 20,
        url_ttl: float = 300.0,
        range_support: bool = True,
        reset_after_bytes: int | None = None,
        reset_count: int = 1,
        truncate_gzip: bool = False,
        truncate_count: int = 1,
        filename: str = "export.ndjson.gz",
        file_format: str = "ndjson",
        export_id: str | None = None,
    ) -> str:
        return self.exports.add_operation(
            op_id,
            duration,
            final_state,
            error_details,
            progress_steps,
            results_shape,
            size,
            url_ttl,
            range_support,
            reset_after_bytes,
            reset_count,
            truncate_gzip,
            truncate_count,
            filename,
            file_format,
            export_id,
        )

    def export_id(self, op_id: str) -> str:
        return self.exports.operations[op_id].export_id

    def file_sha256(self, op_or_export_id: str) -> str:
        """sha256 of the whole file an operation (or export id) serves, streamed once and cached."""
        return self.exports.download_for(op_or_export_id).sha256()

    def file_size(self, op_or_export_id: str) -> int:
        return self.exports.download_for(op_or_export_id).size

    def bytes_served(self, op_or_export_id: str) -> int:
        """Body bytes of that file actually written to sockets (all downloads, ranges and resets included)."""
        if op_or_export_id in self.legacy.bundles:
            return self.legacy.bundles[op_or_export_id].download.bytes_served
        return self.exports.download_for(op_or_export_id).bytes_served

    # --- legacy data export -------------------------------------------------------------------------

    @property
    def bundles(self) -> dict[str, Bundle]:
        return self.legacy.bundles

    def add_bundles(
        self,
        count: int,
        size: int = 1 << 20,
        start: int = 1_700_000_000,
        span: int = 3600,
        available_at: float | None = None,
        **download_options: Any,
    ) -> list[str]:
        return self.legacy.add_bundles(count, size, start, span, available_at, **download_options)

    def bundle_sha256(self, bundle_id: str | int) -> str:
        return self.legacy.bundles[str(bundle_id)].download.sha256()
