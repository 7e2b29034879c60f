"""What route handlers receive and return: requests, responses, Fullstory error bodies, timestamps."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

# Fullstory's error codes and messages, by HTTP status (from the docs' examples).
ERRORS = {
    400: ("invalid_argument", "invalid argument"),
    401: ("unauthorized", "access is unauthorized"),
    403: ("forbidden", "insufficient permissions"),
    404: ("resource_not_found", "Requested resource does not exist"),
    409: ("conflict", "conflict"),
    422: ("unprocessable_entity", "unprocessable entity"),
    429: ("too_many_requests", "Too many requests. Client has exceeded the rate limit for this endpoint."),
    500: ("server_error", "Server error was encountered"),
    502: ("bad_gateway", "bad gateway"),
    503: ("service_unavailable", "service unavailable"),
    504: ("gateway_timeout", "gateway timeout"),
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # from the route template
    role: str | None = None  # the API key's role, once authenticated

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class BodyStream(Protocol):
    """A large body written straight to the socket (files); `length` is the full size."""

    length: int

    def write(self, send: Callable[[memoryview], None], start: int, end: int) -> None: ...


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: BodyStream | None = None  # when set, body is ignored
    stream_range: tuple[int, int] | None = None  # [start, end) of stream to send
    json_body: bool = False  # eligible for gzip Content-Encoding and the "malformed" fault
    reset_after: int | None = None  # abort the connection with RST after this many body bytes
    on_bytes: Callable[[int], None] | None = None  # told how many body bytes went out

    @property
    def length(self) -> int:
        if self.stream is not None:
            start, end = self.stream_range or (0, self.stream.length)
            return end - start
        return len(self.body)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})}, json_body=True)


def error(
    status: int, message: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    default_code, default_message = ERRORS.get(status, ("error", "error"))
    return json_response({"message": message or default_message, "code": code or default_code}, status, headers)


def rfc3339(ts: float) -> str:
    """Fullstory's timestamp form: UTC with milliseconds and a Z."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset")
    return dt.timestamp()
