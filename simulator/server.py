"""The Simulator: a Fullstory look-alike on a real loopback socket, with per-test knobs and request stats."""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from .batch import BatchImports, BatchJob
from .control import register_control
from .exports import Exports, Operation
from .handler import SimulatorHandler
from .legacy import Bundle, LegacyExport
from .state import SimState


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.connections: set[socket.socket] = set()
        super().__init__(address, handler)


class Simulator(SimState):
    """Fullstory's asynchronous APIs on http://127.0.0.1:PORT. Use as a context manager or start()/stop().

    Its clock, knobs, keys, faults and request stats are SimState's (state.py), which the parts share;
    here: the parts themselves, their routes, the socket, and the methods a test calls to set up jobs and files.
    """

    def __init__(self, api_key: str = "test-key", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, host, port)  # the clock, knobs, keys, faults, router and request record
        self.batch = BatchImports(self)
        self.batch.register(self.router)
        self.exports = Exports(self)
        self.exports.register(self.router)
        self.legacy = LegacyExport(self)
        self.legacy.register(self.router)
        register_control(
            self,
            self.router,
            batch=self.batch,
            add_batch_job=self.add_batch_job,
            add_operation=self.add_operation,
            add_bundles=self.add_bundles,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        handler = type("Handler", (SimulatorHandler,), {"sim": self})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self.listening = True
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
        self.listening = False
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
