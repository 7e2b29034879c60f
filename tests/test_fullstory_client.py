"""The one HTTP client and its error table, against httpx.MockTransport."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, timedelta

import httpx
import pytest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.fullstory_client import FullstoryClient, parse_retry_after
from vocabulary.contract import redact_url

KEY = "sekrit-key-123"


def client_for(handler) -> FullstoryClient:
    return FullstoryClient(KEY, "https://api.example.test", transport=httpx.MockTransport(handler))


async def call(handler, **kw):
    c = client_for(handler)
    try:
        return await c.call("GET", "/v2/events/batch/abc", what="get events batch job abc", **kw)
    finally:
        await c.aclose()


async def test_sends_basic_key_as_is_and_returns_json():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers["authorization"]
        seen["url"] = str(request.url)
        return httpx.Response(200, json={"ok": 1}, headers={"Retry-After": "7"})

    resp = await call(handler)
    assert seen["auth"] == f"Basic {KEY}"
    assert seen["url"] == "https://api.example.test/v2/events/batch/abc"
    assert resp.body == {"ok": 1}
    assert resp.retry_after == timedelta(seconds=7)


@pytest.mark.parametrize(
    "status,etype,retryable",
    [
        (400, "FullstoryBadRequest", False),
        (401, "FullstoryUnauthorized", False),
        (403, "FullstoryForbidden", False),
        (404, "FullstoryNotFound", False),
        (422, "FullstoryUnprocessable", False),
        (418, "FullstoryClientError", False),
        (429, "FullstoryRateLimited", True),
        (500, "FullstoryServerError", True),
        (502, "FullstoryUnavailable", True),
        (503, "FullstoryUnavailable", True),
        (504, "FullstoryUnavailable", True),
        (599, "FullstoryServerError", True),
    ],
)
async def test_error_table(status, etype, retryable):
    def handler(request):
        return httpx.Response(status, json={"message": "went wrong", "code": "some_code"})

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    err = info.value
    assert err.type == etype
    assert err.non_retryable is (not retryable)
    assert "some_code" in err.message and "went wrong" in err.message
    assert "get events batch job abc" in err.message
    assert KEY not in err.message and KEY not in repr(err.details)


async def test_403_hint_names_the_key_role():
    def handler(request):
        return httpx.Response(403, json={"message": "insufficient permissions", "code": "forbidden"})

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert "Admin or Architect" in info.value.message


async def test_401_hint_names_the_setting():
    def handler(request):
        return httpx.Response(401, json={"message": "access is unauthorized", "code": "unauthorized"})

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert "FULLSTORY_API_KEY" in info.value.message


async def test_429_carries_retry_after_as_next_retry_delay():
    def handler(request):
        return httpx.Response(
            429, json={"message": "slow down", "code": "too_many_requests"}, headers={"Retry-After": "3600"}
        )

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert info.value.next_retry_delay == timedelta(hours=1)
    assert not info.value.non_retryable


async def test_503_with_http_date_retry_after():
    when = email.utils.formatdate(time.time() + 120, usegmt=True)

    def handler(request):
        return httpx.Response(503, text="<html>unavailable</html>", headers={"Retry-After": when})

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    delay = info.value.next_retry_delay
    assert delay is not None and timedelta(seconds=100) < delay <= timedelta(seconds=121)
    assert info.value.type == "FullstoryUnavailable"


async def test_non_retryable_error_has_no_retry_delay():
    def handler(request):
        return httpx.Response(404, json={"message": "nope", "code": "resource_not_found"}, headers={"Retry-After": "5"})

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert info.value.next_retry_delay is None


async def test_connection_reset_is_retryable():
    def handler(request):
        raise httpx.ReadError("[Errno 104] Connection reset by peer")

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert info.value.type == "FullstoryUnavailable"
    assert not info.value.non_retryable
    assert "104" in info.value.message


async def test_timeout_is_retryable():
    def handler(request):
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert not info.value.non_retryable


async def test_malformed_json_is_retryable():
    def handler(request):
        return httpx.Response(200, content=b'{"job": {"id": ')

    with pytest.raises(ApplicationError) as info:
        await call(handler)
    assert info.value.type == "FullstoryMalformedResponse"
    assert not info.value.non_retryable


async def test_202_is_a_benign_not_ready_retry_when_asked():
    def handler(request):
        return httpx.Response(202)

    with pytest.raises(ApplicationError) as info:
        await call(handler, not_ready_is_retry=True)
    assert info.value.type == "ResultsNotReady"
    assert info.value.category == ApplicationErrorCategory.BENIGN
    assert info.value.next_retry_delay and info.value.next_retry_delay > timedelta(0)
    assert (await call(handler)).status == 202


@pytest.mark.parametrize(
    "value,expected",
    [
        ("0", 0),
        ("30", 30),
        ("1.5", 1.5),
        (" 12 ", 12),
        ("-5", 0),
        ("999999999", 86400),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value, expected):
    got = parse_retry_after(value)
    assert (got.total_seconds() if got is not None else None) == expected


def test_parse_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == timedelta(0)


def test_redact_url_drops_query_and_userinfo():
    url = "https://user:pw@storage.example.test:8443/exports/x.gz?X-Amz-Signature=abc&Expires=1"
    assert redact_url(url) == "https://storage.example.test:8443/exports/x.gz"


def test_key_is_not_in_repr_or_str():
    c = FullstoryClient(KEY, "https://api.example.test")
    assert KEY not in repr(c.__dict__.get("base_url")) and KEY not in repr(c)


def test_next_check_text_names_the_delay_and_the_clock_time():
    from datetime import datetime, timedelta

    from activities.fullstory_client import next_check_text

    before = datetime.now(UTC)
    text = next_check_text(timedelta(seconds=6.75))
    assert text.startswith("next check in 6.8 s (at ") and text.endswith(" UTC)")
    clock = text[-13:-5]
    assert clock in {f"{before + timedelta(seconds=s):%H:%M:%S}" for s in (6, 7, 8)}
    assert next_check_text(timedelta(hours=6)).startswith("next check in 6 h (at ")
    assert " on 20" in next_check_text(timedelta(hours=20))
