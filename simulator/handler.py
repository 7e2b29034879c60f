"""The HTTP side: parse a request, apply faults, authenticate, route, write the response (or abort it)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote, urlsplit

from .faults import Fault
from .protocol import Request, Response, error
from .routing import ANY_KEY, EXPORT_KEY, NO_AUTH, STORAGE
from .state import SimState

EXPORT_ROLES = ("admin", "architect")
GZIP_MIN_BYTES = 1024


class _Aborted(Exception):
    """The connection was reset on purpose (a "reset" fault)."""


class SimulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fullstory-simulator"
    sim: SimState  # set on the subclass the server builds (the Simulator)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.connections.discard(self.connection)  # type: ignore[attr-defined]
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by design
        pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = lambda self: self.dispatch()  # noqa: E731

    # --- request --------------------------------------------------------------------------------------

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def dispatch(self) -> None:
        sim = self.sim
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self.read_body()
        req = Request(self.command, path, query, headers, body)
        route, params, path_exists = sim.router.match(self.command, path)
        req.params = params
        control = route is not None and route.access == NO_AUTH
        fault = None if control else sim.faults.take(self.command, path)

        if fault is not None and fault.kind == "status":
            resp = fault_response(fault)
        elif route is None:
            resp = error(
                405 if path_exists else 404,
                f"{'method not allowed' if path_exists else 'no such route'}: {self.command} {path}",
                "method_not_allowed" if path_exists else "resource_not_found",
            )
        else:
            resp = self.authorize(route.access, req) or self.call(route.handler, req)
        if fault is not None and fault.kind == "malformed":
            resp = malformed(resp)
        if fault is not None and fault.kind == "reset":
            resp.reset_after = fault.after_bytes
        if not control:
            sim.record(req, route.template if route else None, resp.status)
        self.send(req, resp)

    def authorize(self, access: str, req: Request) -> Response | None:
        auth = req.headers.get("authorization")
        if access == NO_AUTH:  # the control API: loopback callers only
            if self.client_address[0] not in ("127.0.0.1", "::1"):
                return error(403, "the /_sim/ control API answers loopback callers only")
            return None
        if access == STORAGE:
            if auth is not None:
                return error(
                    400,
                    "signed storage URLs take no Authorization header; send the URL as it is",
                    "unexpected_authorization",
                )
            return None
        scheme, _, key = (auth or "").partition(" ")
        role = self.sim.keys.get(key.strip()) if scheme.lower() == "basic" else None
        if role is None:
            return error(401)
        req.role = role
        if access == EXPORT_KEY and role not in EXPORT_ROLES:
            return error(403)
        assert access in (ANY_KEY, EXPORT_KEY)
        return None

    def call(self, handler, req: Request) -> Response:
        try:
            return handler(req)
        except Exception as exc:  # a simulator bug: say so loudly, answer like Fullstory would
            traceback.print_exc(file=sys.stderr)
            return error(500, f"simulator error: {exc!r}")

    # --- response -------------------------------------------------------------------------------------

    def send(self, req: Request, resp: Response) -> None:
        headers = dict(resp.headers)
        body = resp.body
        if (
            resp.json_body
            and resp.stream is None
            and len(body) > GZIP_MIN_BYTES
            and "gzip" in req.headers.get("accept-encoding", "")
        ):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        length = resp.length if resp.stream is not None else len(body)
        try:
            self.send_response(resp.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if req.method != "HEAD":
                self.write_body(resp, body)
        except _Aborted:
            self.abort()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True

    def write_body(self, resp: Response, body: bytes) -> None:
        limit = resp.reset_after
        sent = 0
        sock = self.connection
        pace = Pacer(lambda: self.sim.storage_bytes_per_second) if resp.stream is not None else None

        def send(chunk: memoryview) -> None:
            if limit is not None and sent + len(chunk) >= limit:
                chunk = chunk[: max(0, limit - sent)]
                if chunk:
                    put(chunk)
                raise _Aborted
            put(chunk)

        def put(chunk: memoryview) -> None:
            nonlocal sent
            step = pace.step() if pace else None
            pieces = [chunk] if step is None else [chunk[i : i + step] for i in range(0, len(chunk), step)]
            for piece in pieces:
                if pace:
                    pace.wait(len(piece))
                sock.sendall(piece)
                sent += len(piece)
                if resp.on_bytes:
                    resp.on_bytes(len(piece))

        if resp.stream is not None:
            start, end = resp.stream_range or (0, resp.stream.length)
            resp.stream.write(send, start, end)
        elif body:
            send(memoryview(body))
        if limit is not None:
            raise _Aborted  # the fault asked for more bytes than the body has: reset at its end

    def abort(self) -> None:
        """Reset the TCP connection (RST, not FIN): SO_LINGER on with a zero timeout, then close."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(sock.detach())
        except OSError:
            pass


class Pacer:
    """Holds a file download to sim.storage_bytes_per_second, read again as it goes (None: full speed)."""

    def __init__(self, rate: Callable[[], float | None]) -> None:
        self.rate = rate
        self.current: float | None = None
        self.t0 = 0.0
        self.sent = 0

    def step(self) -> int | None:
        rate = self.rate()
        return None if not rate else max(1024, min(64 << 10, int(rate / 20)))

    def wait(self, n: int) -> None:
        rate = self.rate()
        if rate != self.current:  # changed mid-download: pace from here at the new rate
            self.current, self.t0, self.sent = rate, time.monotonic(), 0
        if not rate:
            return
        self.sent += n
        delay = self.t0 + self.sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def fault_response(fault: Fault) -> Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    resp = error(fault.status, headers=headers)
    if fault.body is not None:
        resp.body = json.dumps(fault.body).encode()
    return resp


def malformed(resp: Response) -> Response:
    """200 with JSON cut off in the middle and a Content-Length that matches what is sent."""
    body = resp.body if resp.stream is None else b""
    cut = body[: len(body) // 2] if len(body) > 4 else b'{"results": [{"message": "'
    return Response(200, cut, {"Content-Type": "application/json"})
