"""The one Fullstory HTTP client: auth, base URLs, timeouts, and the error table.

No activity builds its own client or reads status codes itself: they call
`FullstoryClient.call()` and get parsed JSON back, or an `ApplicationError`
that tells Temporal whether (and when) to retry. The API key lives only in
this object; it never reaches inputs, history, logs or error messages.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.metrics import Metrics, endpoint_of
from vocabulary import errors, texts
from vocabulary.slot_messages import key_fingerprint

MAX_RETRY_AFTER = timedelta(hours=24)
NOT_READY_DELAY = timedelta(seconds=5)
# The global tracer: a no-op until infra/tracing.py installs a provider (OTEL_TRACES_EXPORTER).
TRACER = trace.get_tracer("fullstory-jobs.http")


@dataclass(frozen=True)
class ErrorRule:
    error: errors.ErrorType  # its type name and whether Temporal retries it come from the catalogue
    hint: str


# The one table that maps HTTP statuses to retry decisions.
ERROR_TABLE: dict[int, ErrorRule] = {
    400: ErrorRule(
        errors.FULLSTORY_BAD_REQUEST, "Fullstory rejected the request as invalid: fix the input and start again"
    ),
    401: ErrorRule(
        errors.FULLSTORY_UNAUTHORIZED,
        "the API key was not accepted: check FULLSTORY_API_KEY (the key as issued, no 'Basic ') "
        "and FULLSTORY_BASE_URL (US https://api.fullstory.com or EU https://api.eu1.fullstory.com)",
    ),
    403: ErrorRule(
        errors.FULLSTORY_FORBIDDEN,
        "the API key's role is not allowed to do this: exports need an Admin or Architect key "
        "(a Standard key can only send events and users)",
    ),
    404: ErrorRule(
        errors.FULLSTORY_NOT_FOUND,
        "check the id, and that FULLSTORY_BASE_URL is the data centre (US/EU) of the org that owns it",
    ),
    422: ErrorRule(
        errors.FULLSTORY_UNPROCESSABLE, "Fullstory could not process the request: fix the input and start again"
    ),
    429: ErrorRule(errors.FULLSTORY_RATE_LIMITED, "rate limited: retrying after the server's Retry-After"),
    500: ErrorRule(errors.FULLSTORY_SERVER_ERROR, "Fullstory had an internal error: retrying with backoff"),
    502: ErrorRule(errors.FULLSTORY_UNAVAILABLE, "bad gateway: retrying"),
    503: ErrorRule(errors.FULLSTORY_UNAVAILABLE, "Fullstory is temporarily unavailable: retrying"),
    504: ErrorRule(errors.FULLSTORY_UNAVAILABLE, "gateway timeout: retrying"),
}
OTHER_5XX = ErrorRule(errors.FULLSTORY_SERVER_ERROR, "unexpected server error: retrying with backoff")
OTHER_4XX = ErrorRule(errors.FULLSTORY_CLIENT_ERROR, "unexpected client error: not retried")
TRANSPORT = ErrorRule(errors.FULLSTORY_UNAVAILABLE, "network error (connection reset, timeout): retrying")
MALFORMED = ErrorRule(
    errors.FULLSTORY_MALFORMED_RESPONSE, "Fullstory sent a body that is not the expected JSON: retrying"
)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    retry_after: timedelta | None = None


def malformed_error(what: str, detail: str) -> ApplicationError:
    """A 2xx body that does not have the documented shape: retried (it is usually a broken proxy or a cut body)."""
    return MALFORMED.error(f"{what}: {detail} ({MALFORMED.hint})")


def rule_for(status: int) -> ErrorRule:
    if status in ERROR_TABLE:
        return ERROR_TABLE[status]
    return OTHER_5XX if status >= 500 else OTHER_4XX


def parse_retry_after(value: str | None, now: float | None = None) -> timedelta | None:
    """`Retry-After` as seconds or an HTTP-date; None when absent or unreadable. Capped at 24 h."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(timedelta(seconds=max(0.0, seconds)), MAX_RETRY_AFTER)


def retry_after_of(response: httpx.Response) -> timedelta | None:
    return parse_retry_after(response.headers.get("retry-after"))


def error_from_response(
    response: httpx.Response, what: str, *, hint: str | None = None, retry_after: timedelta | None = None
) -> ApplicationError:
    """Map a non-2xx response to an ApplicationError by the table; carries Fullstory's message and code.

    `retry_after`: the response's Retry-After, as `FullstoryClient.call` already parsed it.
    """
    status = response.status_code
    rule = rule_for(status)
    code, message = _fullstory_error_body(response)
    delay = retry_after if retry_after is not None else retry_after_of(response)
    text = f"{what}: HTTP {status}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    text += f" ({hint or rule.hint})"
    return rule.error(
        text,
        {
            "status": status,
            "code": code,
            "message": message,
            "hint": hint or rule.hint,
            "retry_after_seconds": delay.total_seconds() if delay else None,
        },
        next_retry_delay=delay,
    )


def error_from_transport(exc: httpx.TransportError, what: str) -> ApplicationError:
    # httpx messages name host and port at most; never headers. Keep only the class and text.
    return TRANSPORT.error(
        f"{what}: {type(exc).__name__}: {exc or 'no detail'} ({TRANSPORT.hint})",
        {"status": None, "error": type(exc).__name__},
    )


def next_check_text(delay: timedelta) -> str:
    """ "next check in 7 s (at 15:40:24 UTC)", from the wall clock: activities' benign wait messages."""
    return texts.next_check_text(delay, datetime.now(UTC))


def not_ready_error(what: str, delay: timedelta = NOT_READY_DELAY) -> ApplicationError:
    return errors.RESULTS_NOT_READY(
        f"{what}: not ready yet (HTTP 202); {next_check_text(delay)}", {"status": 202}, next_retry_delay=delay
    )


def _fullstory_error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    message = body.get("message")
    return (str(code) if code else None), (str(message)[:500] if message else None)


def record_response(span: Span, status: int, retry_after: timedelta | None) -> None:
    """An HTTP span's answer: the status (an error from 400 up) and the Retry-After seconds, when sent."""
    span.set_attribute("http.response.status_code", status)
    if retry_after is not None:
        span.set_attribute("fullstory.retry_after_seconds", retry_after.total_seconds())
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)


def _record_failure(span: Span, exc: BaseException) -> None:
    """The error's type (ours from the catalogue, else the exception's class), never its text; a benign
    "not ready yet" (a 202) is no error."""
    if isinstance(exc, ApplicationError):
        if exc.type:
            span.set_attribute("fullstory.error", exc.type)
        if exc.category == ApplicationErrorCategory.BENIGN:
            return
    if "error.type" not in (getattr(span, "attributes", None) or {}):  # a status or transport error set it
        span.set_attribute("error.type", (isinstance(exc, ApplicationError) and exc.type) or type(exc).__name__)
    span.set_status(StatusCode.ERROR)


class FullstoryClient:
    """One per worker process; shared by every activity."""

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.fullstory.com",
        export_base_url: str = "https://export.fullstory.com",
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 200,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Fullstory API key is required")
        self._authorization = f"Basic {api_key}"
        self.key_fingerprint = key_fingerprint(self._authorization)  # names things per key (the slots workflow)
        self.base_url = base_url.rstrip("/")
        self.export_base_url = export_base_url.rstrip("/")
        self.metrics = metrics or Metrics()
        self.tracer = tracer or TRACER
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "fullstory-jobs/0.1", "Accept-Encoding": "gzip"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def auth_headers(self) -> dict[str, str]:
        """For authenticated streaming calls (legacy bundles); never for storage hosts."""
        return {"Authorization": self._authorization}

    def url(self, path: str, *, api: str = "api") -> str:
        base = self.export_base_url if api == "export" else self.base_url
        return f"{base}{path}"

    @contextlib.contextmanager
    def span(self, method: str, url: str, *, storage: bool = False) -> Iterator[Span]:
        """One client span per HTTP call: "fullstory GET /v2/events/batch/{id}" ("storage GET ..." for a signed URL).

        Attributes: the method, the route template (ids out: `endpoint_of`, never the raw URL nor its query,
        which for a signed URL is its signature), the host, the activity attempt; the caller adds the status
        and Retry-After (`record_response`). Never a header (the API key), never a body (a user's data);
        a failure records its error type, never its message.
        """
        parts = urlsplit(url)
        template = endpoint_of(parts.path)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.template": template,
            "server.address": parts.hostname or "",
        }
        if activity.in_activity():
            info = activity.info()
            attributes["temporal.activity.type"] = info.activity_type
            attributes["temporal.activity.attempt"] = info.attempt
        with self.tracer.start_as_current_span(
            f"{'storage' if storage else 'fullstory'} {method} {template}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,  # an exception's text and stack may quote Fullstory's answer: not recorded
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                _record_failure(span, exc)
                raise

    async def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        api: str = "api",
        json_body: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        not_ready_is_retry: bool = False,
    ) -> ApiResponse:
        """One authenticated call; returns status, parsed JSON body and Retry-After, or raises per the error table.

        `what` names the call in errors ("get events batch job X"). With
        `not_ready_is_retry`, a 202 raises a benign retryable error.
        """
        request_headers = {**self.auth_headers(), "Accept": "application/json"}
        if headers:
            request_headers.update(headers)
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
        if content is not None:
            request_headers["Content-Type"] = "application/json"
        url = self.url(path, api=api)
        with self.span(method, url) as span:
            try:
                response = await self.http.request(method, url, content=content, params=params, headers=request_headers)
            except httpx.TransportError as exc:
                self.metrics.http_call(method, path, None, None)
                span.set_attribute("error.type", type(exc).__name__)
                raise error_from_transport(exc, what) from None
            retry_after = retry_after_of(response)
            self.metrics.http_call(method, path, response.status_code, retry_after)
            record_response(span, response.status_code, retry_after)
            if response.status_code == 202 and not_ready_is_retry:
                raise not_ready_error(what, retry_after or NOT_READY_DELAY)
            if not response.is_success:
                raise error_from_response(response, what, retry_after=retry_after)
        if response.status_code == 204 or not response.content:
            return ApiResponse(response.status_code, None, retry_after)
        try:
            return ApiResponse(response.status_code, response.json(), retry_after)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise malformed_error(what, f"HTTP {response.status_code} with a body that is not JSON") from None
