"""The worker's health endpoint, for Kubernetes probes and load balancers.

    GET /healthz   200 while the worker process runs its workers (liveness)
    GET /readyz    200 when the workers poll and Temporal answers a health check
                   within 3 s; 503 with the reason otherwise (readiness)

A deliberately tiny HTTP/1.0 server on asyncio: no dependency, one line of
text per answer, nothing else served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("fullstory_jobs.health")
CHECK_TIMEOUT = 3.0


class Health:
    def __init__(self, temporal_check: Callable[[], Awaitable[object]]) -> None:
        self.temporal_check = temporal_check
        self.polling = False  # set by the worker while its workers run

    async def answer(self, path: str) -> tuple[int, str]:
        if path == "/healthz":
            return (200, "ok") if self.polling else (503, "workers are not running")
        if path == "/readyz":
            if not self.polling:
                return 503, "workers are not running"
            try:
                await asyncio.wait_for(self.temporal_check(), CHECK_TIMEOUT)
            except Exception as e:  # timeout, connection refused, RPCError: all "not ready"
                return 503, f"Temporal does not answer: {type(e).__name__}"
            return 200, "ready"
        return 404, "not found: try /healthz or /readyz"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
                pass
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, text = 405, "only GET"
            else:
                status, text = await self.answer(parts[1].split("?", 1)[0])
            body = (text + "\n").encode()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Service Unavailable")
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if parts and parts[0] != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[None]:
        server = await asyncio.start_server(self._handle, host, port)
        log.info("health endpoint on http://%s:%d/healthz and /readyz", host, port)
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()
