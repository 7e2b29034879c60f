"""The Fullstory simulator itself: auth, batch jobs, paging, faults, files, legacy rate limit, Swagger shapes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from simulator import Simulator

KEY = "test-key"
OPENAPI = Path(__file__).resolve().parents[1].parent / "shared" / "fullstory-api" / "openapi"
STATUS_ROUTE = "/v2/{kind}/batch/{job_id}"
ERRORS_ROUTE = "/v2/{kind}/batch/{job_id}/errors"
IMPORTS_ROUTE = "/v2/{kind}/batch/{job_id}/imports"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim():
    with Simulator(api_key=KEY) as s:
        s.clock = FakeClock()
        yield s


@pytest.fixture
def client(sim):
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Basic {KEY}"}, timeout=10) as c:
        yield c


def walk(client: httpx.Client, url: str) -> tuple[list[dict], int]:
    """Every record of a paged errors/imports listing, and the number of pages."""
    records, token, pages = [], None, 0
    while True:
        r = client.get(url, params={"page_token": token} if token else None)
        assert r.status_code == 200, r.text
        body = r.json()
        records += body["results"]
        pages += 1
        token = body.get("next_page_token")
        if not token:
            return records, pages


# --- auth and routing ---------------------------------------------------------------------------------


def test_auth_key_roles_and_unknown_routes(sim, client):
    job = sim.add_batch_job()
    url = f"/v2/events/batch/{job}"
    for headers in (
        {},
        {"Authorization": "Basic wrong"},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": "Basic " + base64.b64encode(KEY.encode()).decode()},
    ):
        r = httpx.get(sim.base_url + url, headers=headers)
        assert (r.status_code, r.json()) == (401, {"message": "access is unauthorized", "code": "unauthorized"})
    assert client.get(url).status_code == 200
    sim.add_key("std-key", role="standard")
    std = {"Authorization": "Basic std-key"}
    assert httpx.get(sim.base_url + url, headers=std).status_code == 200  # batch endpoints: any role
    for method, path in (
        ("POST", "/segments/v1/exports"),
        ("GET", "/operations/v1/x"),
        ("GET", "/search/v1/exports/x/results"),
        ("GET", "/api/v1/export/list"),
        ("GET", "/api/v1/export/get"),
    ):
        r = httpx.request(method, sim.base_url + path, headers=std)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), path
    r = client.get("/v2/nothing/here")
    assert r.status_code == 404 and set(r.json()) == {"message", "code"}
    with pytest.raises(ValueError):
        sim.add_key("k", role="owner")


# --- batch imports ------------------------------------------------------------------------------------


def test_job_lifecycle_on_a_fake_clock(sim, client):
    job = sim.add_batch_job(
        kind="events", duration=600, imports=7, errors=3, page_size=2, retry_after_while_processing=30
    )
    assert job.endswith("=") and job[:-1].isalnum()
    assert sim.jobs[job].kind == "events" and sim.jobs[job].status == "PROCESSING"
    r = client.get(f"/v2/events/batch/{job}")
    body = r.json()
    assert body["imports"] == 0 and "errors" not in body and "finished" not in body["job"]
    assert body["job"]["status"] == "PROCESSING" and r.headers["retry-after"] == "30"
    for which in ("errors", "imports"):
        r = client.get(f"/v2/events/batch/{job}/{which}")
        assert r.status_code == 202 and r.content == b""
    sim.clock.now += 600
    r = client.get(f"/v2/events/batch/{job}")
    body = r.json()
    assert body["imports"] == 7 and body["errors"] == 3 and body["job"]["status"] == "FAILED"
    assert body["job"]["finished"] > body["job"]["created"] and "retry-after" not in r.headers
    assert sim.jobs[job].status == "FAILED"
    assert client.get(f"/v2/users/batch/{job}").status_code == 404  # kind mismatch
    r = client.get("/v2/events/batch/nope=")
    assert (r.status_code, r.json()["code"]) == (404, "resource_not_found")
    ok = sim.add_batch_job(kind="users", imports=4)
    body = client.get(f"/v2/users/batch/{ok}").json()
    assert body["job"]["status"] == "COMPLETED" and "errors" not in body  # "Only included for failed imports"
    sim.status_errors_field = "always"
    assert client.get(f"/v2/users/batch/{ok}").json()["errors"] == 0


@pytest.mark.parametrize("kind", ["events", "users"])
def test_paging_collects_exactly_the_expected_records(sim, client, kind):
    job = sim.add_batch_job(
        kind=kind,
        imports=9,
        errors=25,
        page_size=4,
        imports_page_size=5,
        error_codes=("invalid_field", "required_field", "too_large"),
    )
    errors, pages = walk(client, f"/v2/{kind}/batch/{job}/errors")
    assert errors == sim.expected_records(job, "errors") and pages == 7
    assert len({json.dumps(r, sort_keys=True) for r in errors}) == 25  # unique, so duplicates would show
    assert [r["code"] for r in errors[:3]] == ["invalid_field", "required_field", "too_large"]
    imports, pages = walk(client, f"/v2/{kind}/batch/{job}/imports")
    assert imports == sim.expected_records(job, "imports") and pages == 2
    assert sim.count("GET", ERRORS_ROUTE) == 7 and sim.count(route=IMPORTS_ROUTE) == 2
    first = client.get(f"/v2/{kind}/batch/{job}/errors").json()
    assert first["total_records"] == "25"
    token = first["next_page_token"]
    assert not token.isdigit()  # opaque
    sim.last_page_token_style = "empty"
    last = client.get(f"/v2/{kind}/batch/{job}/imports", params={"page_token": walk_tokens(client, kind, job)[-1]})
    assert last.json()["next_page_token"] == ""
    for bad in ("bogus", "MTI=", base64.urlsafe_b64encode(b"errors:other=:4").decode()):
        r = client.get(f"/v2/{kind}/batch/{job}/errors", params={"page_token": bad})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    empty = sim.add_batch_job(kind=kind, imports=3, errors=0)
    assert client.get(f"/v2/{kind}/batch/{empty}/errors").json() == {
        "results": [],
        "total_records": "0",
        "next_page_token": "",
    }


def walk_tokens(client, kind, job) -> list[str]:
    tokens, token = [], None
    while True:
        body = client.get(f"/v2/{kind}/batch/{job}/imports", params={"page_token": token} if token else None).json()
        token = body.get("next_page_token")
        if not token:
            return tokens
        tokens.append(token)


def test_create_job_validation_defaults_and_idempotency_key(sim, client):
    for body in ({}, {"requests": []}, {"requests": "x"}, {"requests": [{}] * 50_001}):
        r = client.post("/v2/events/batch", json=body)
        assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    sim.batch_defaults.update(duration=60, errors=2, page_size=1)
    r = client.post(
        "/v2/events/batch",
        json={"requests": [{"name": "a"}] * 10, "shared": {"context": {}}},
        headers={"Idempotency-Key": "wf-1"},
    )
    assert r.status_code == 200
    job = r.json()["job"]
    assert job["status"] == "PROCESSING" and job["id"].endswith("=") and job["created"].endswith("Z")
    same = {"requests": [{"name": "a"}] * 10, "shared": {"context": {}}}
    again = client.post("/v2/events/batch", json=same, headers={"Idempotency-Key": "wf-1"})
    assert again.json()["job"]["id"] == job["id"] and len(sim.jobs) == 1
    # Fullstory: an Idempotency-Key must come with an identical body.
    changed = client.post(
        "/v2/events/batch", json={"requests": [{"name": "a"}] * 10}, headers={"Idempotency-Key": "wf-1"}
    )
    assert changed.status_code == 400 and len(sim.jobs) == 1
    other = client.post("/v2/events/batch", json={"requests": [{"name": "a"}]}).json()["job"]["id"]
    assert other != job["id"] and len(sim.jobs) == 2
    created = sim.jobs[job["id"]]
    assert (created.imports, created.errors, created.status) == (8, 2, "PROCESSING")
    sim.clock.now += 60
    assert client.get(f"/v2/events/batch/{job['id']}").json()["errors"] == 2
    assert len(walk(client, f"/v2/events/batch/{job['id']}/errors")[0]) == 2


def test_large_pages_are_gzipped_when_asked(sim, client):
    job = sim.add_batch_job(errors=200, page_size=200)
    r = client.get(f"/v2/events/batch/{job}/errors", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and len(r.json()["results"]) == 200
    r = client.get(f"/v2/events/batch/{job}/errors", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers and len(r.json()["results"]) == 200


# --- faults -------------------------------------------------------------------------------------------


def test_status_faults_with_retry_after_then_normal_service(sim, client):
    job = sim.add_batch_job(errors=3)
    sim.fault(r"/v2/events/batch/[^/]+$", status=429, retry_after="3600")
    sim.fault_burst(r"/errors$", status=503, count=2)
    r = client.get(f"/v2/events/batch/{job}")
    assert r.status_code == 429 and r.headers["retry-after"] == "3600"
    assert r.json() == {"message": r.json()["message"], "code": "too_many_requests"}
    assert client.get(f"/v2/events/batch/{job}").status_code == 200  # one-shot
    assert [client.get(f"/v2/events/batch/{job}/errors").status_code for _ in range(3)] == [503, 503, 200]
    assert sim.count(route=ERRORS_ROUTE) == 3  # faults count as requests
    assert [r.status for r in sim.requests if r.route == ERRORS_ROUTE] == [503, 503, 200]
    sim.fault("/batch$", method="POST", status=500, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    assert client.get(f"/v2/events/batch/{job}").status_code == 200  # GET does not match a POST rule
    r = client.post("/v2/events/batch", json={"requests": [{"name": "a"}]})
    assert (r.status_code, r.json()["code"]) == (500, "server_error")
    assert r.headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert len(sim.jobs) == 1  # a status fault never reaches the real endpoint
    sim.reset_stats()
    assert sim.requests == [] and sim.count() == 0


def test_reset_fault_is_a_transport_error_and_malformed_is_bad_json(sim, client):
    job = sim.add_batch_job(errors=50)
    sim.fault("/errors$", kind="reset", after_bytes=20)
    with pytest.raises(httpx.TransportError):
        client.get(f"/v2/events/batch/{job}/errors")
    # A raw socket sees the real status line, then the connection ends after exactly 20 body bytes.
    sim.fault("/errors$", kind="reset", after_bytes=20)
    with socket.create_connection(("127.0.0.1", sim.port)) as s:
        s.sendall(
            f"GET /v2/events/batch/{job}/errors HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {KEY}\r\n\r\n".encode()
        )
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) <= 20
    sim.fault("/errors$", kind="malformed")
    r = client.get(f"/v2/events/batch/{job}/errors")
    assert r.status_code == 200 and len(r.content) == int(r.headers["content-length"])
    with pytest.raises(ValueError):
        r.json()
    assert walk(client, f"/v2/events/batch/{job}/errors")[0] == sim.expected_records(job)


# --- Swagger shapes -----------------------------------------------------------------------------------


class Swagger:
    def __init__(self, name: str) -> None:
        path = OPENAPI / name
        if not path.exists():
            pytest.skip(f"{path} is not there (../shared beside the checkout)")
        self.spec = json.loads(path.read_text())

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.spec["definitions"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def response_schema(self, path: str, status: str = "200") -> dict:
        return self.resolve(self.spec["paths"][path]["get"]["responses"][status]["schema"])

    def check(self, value, schema: dict, where: str = "$", allow_missing: tuple[str, ...] = ()) -> None:
        schema = self.resolve(schema)
        kind = schema.get("type")
        types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}
        if kind:
            assert isinstance(value, types[kind]), f"{where}: {value!r} is not {kind}"
            if kind == "integer":
                assert not isinstance(value, bool), where
        if "enum" in schema:
            assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
        if isinstance(value, dict) and "properties" in schema:
            for name in schema.get("required", []):
                assert name in value or name in allow_missing, f"{where}: required {name} missing"
            for name, item in value.items():
                assert name in schema["properties"], f"{where}: {name} is not declared"
                self.check(item, schema["properties"][name], f"{where}.{name}")
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self.check(item, schema["items"], f"{where}[{i}]")


@pytest.mark.parametrize("kind", ["events", "users"])
def test_batch_responses_match_fullstorys_swagger(sim, client, kind):
    spec = Swagger(f"{kind}.swagger.json")
    base = f"/v2/{kind}/batch"
    created = client.post(base, json={"requests": [{"name": "a"} if kind == "events" else {"uid": "u"}]}).json()
    create_schema = spec.resolve(spec.spec["paths"][base]["post"]["responses"]["200"]["schema"])
    spec.check(created, create_schema)
    job = sim.add_batch_job(kind=kind, duration=10, imports=5, errors=5, page_size=3)
    status_schema = spec.response_schema(base + "/{job_id}")
    # While processing, and for completed jobs, Fullstory's docs say "errors" is absent although the
    # spec lists it as required: the simulator follows the docs, clients must accept both.
    spec.check(client.get(f"{base}/{job}").json(), status_schema, allow_missing=("errors",))
    sim.clock.now += 10
    spec.check(client.get(f"{base}/{job}").json(), status_schema)
    for which in ("errors", "imports"):
        page = client.get(f"{base}/{job}/{which}").json()
        assert page["next_page_token"] and len(page["results"]) == 3
        spec.check(page, spec.response_schema(f"{base}/{{job_id}}/{which}"))
        last = client.get(f"{base}/{job}/{which}", params={"page_token": page["next_page_token"]}).json()
        spec.check(last, spec.response_schema(f"{base}/{{job_id}}/{which}"))
    assert "202" in spec.spec["paths"][base + "/{job_id}/errors"]["get"]["responses"]
    error_schema = spec.resolve({"$ref": "#/definitions/fullstory.v2.apierror.ErrorResponse"})
    spec.check(client.get(f"{base}/missing=").json(), error_schema)


# --- operations and segment exports ------------------------------------------------------------------

EXPORT = {
    "segmentId": "everyone",
    "type": "TYPE_EVENT",
    "format": "FORMAT_NDJSON",
    "timeRange": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
    "timezone": "America/New_York",
}


def signed_location(client: httpx.Client, op_id: str) -> str:
    op = client.get(f"/operations/v1/{op_id}").json()
    assert op["state"] == "COMPLETED", op
    return client.get(f"/search/v1/exports/{op['results']['searchExportId']}/results").json()["location"]


def test_export_create_validates_and_operation_steps_through_its_states(sim, client):
    for bad, field in (
        ({**EXPORT, "segmentId": ""}, "segmentId"),
        ({**EXPORT, "type": "TYPE_SESSION"}, "type"),
        ({**EXPORT, "format": "xml"}, "format"),
        ({k: v for k, v in EXPORT.items() if k != "timeRange"}, "timeRange"),
        ({**EXPORT, "timeRange": {"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}}, "timeRange.end"),
        ({**EXPORT, "timezone": "Mars/Olympus"}, "timezone"),
        ({**EXPORT, "fields": []}, "fields"),
    ):
        r = client.post("/segments/v1/exports", json=bad)
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument" and field in r.json()["message"]
    sim.export_defaults.update(duration=1000, progress_steps=4, size=100_000)
    op_id = client.post("/segments/v1/exports", json=EXPORT, headers={"Idempotency-Key": "x"}).json()["operationId"]
    assert client.post("/segments/v1/exports", json=EXPORT, headers={"Idempotency-Key": "x"}).json() == {
        "operationId": op_id
    }
    seen = []
    for _ in range(12):
        op = client.get(f"/operations/v1/{op_id}").json()
        seen.append((op["state"], op["estimatePctComplete"]))
        assert ("finishedAt" in op) == (op["state"] == "COMPLETED")
        sim.clock.now += 99
    assert seen[0] == ("PENDING", 0) and seen[-1] == ("COMPLETED", 100)
    assert {s for s, _ in seen} == {"PENDING", "RUNNING", "COMPLETED"}
    assert [p for s, p in seen if s == "RUNNING"] == sorted(p for s, p in seen if s == "RUNNING")
    assert {p for s, p in seen if s == "RUNNING"} <= {0, 25, 50, 75}
    assert sim.file_size(op_id) == 100_000
    schema_page = OPENAPI.parent / "operation-schema.txt"
    if schema_page.exists():
        text = schema_page.read_text()
        schema = json.loads(text[text.index("{", text.index("Raw")) :])
        assert set(op) <= set(schema["properties"]) and op["state"] in schema["properties"]["state"]["enum"]
    failed = sim.add_operation(duration=10, final_state="FAILED", error_details="segment too large")
    sim.clock.now += 10
    op = client.get(f"/operations/v1/{failed}").json()
    assert op["state"] == "FAILED" and op["errorDetails"] == "segment too large" and "results" not in op
    listed = client.get("/operations/v1", params={"limit": 1}).json()
    assert len(listed["operations"]) == 1 and listed["nextPaginationToken"]
    rest = client.get("/operations/v1", params={"limit": 1, "pagination_token": listed["nextPaginationToken"]})
    assert {o["id"] for o in listed["operations"] + rest.json()["operations"]} == {op_id, failed}
    assert [o["id"] for o in client.get("/operations/v1", params={"state": "FAILED"}).json()["operations"]] == [failed]
    assert client.get("/operations/v1/nope").status_code == 404


def test_download_is_an_exact_size_gzip_with_range_expiry_and_no_authorization(sim, client):
    op_id = sim.add_operation(size=300_000, url_ttl=300)
    url = signed_location(client, op_id)
    assert "Expires=" in url and "Signature=" in url and url.startswith(sim.base_url + "/_storage/")
    r = httpx.get(url)
    assert r.status_code == 200 and len(r.content) == 300_000 == int(r.headers["content-length"])
    assert r.headers["content-type"] == "application/gzip" and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"] == 'attachment; filename="export.ndjson.gz"'
    assert hashlib.sha256(r.content).hexdigest() == sim.file_sha256(op_id) == sim.file_sha256(sim.export_id(op_id))
    rows = [json.loads(line) for line in gzip.decompress(r.content).decode().splitlines()]
    assert len(rows) > 100 and {"IndvId", "SessionId", "EventStart", "EventType", "PageUrl"} <= set(rows[0])
    assert len(gzip.decompress(r.content)) > 5 * len(r.content)  # realistic compression
    part = httpx.get(url, headers={"Range": "bytes=123456-"})
    assert part.status_code == 206 and part.headers["content-range"] == "bytes 123456-299999/300000"
    assert r.content[:123456] + part.content == r.content
    assert httpx.get(url, headers={"Range": "bytes=300000-"}).status_code == 416
    assert sim.bytes_served(op_id) == 300_000 + 300_000 - 123456
    assert proc_gzip_ok(r.content)
    # The storage host refuses an Authorization header, and counts the attempt.
    bad = httpx.get(url, headers={"Authorization": f"Basic {KEY}"})
    assert (bad.status_code, bad.json()["code"]) == (400, "unexpected_authorization")
    assert sim.count("GET", "/_storage/{export_id}/{filename}") == 4
    forged = httpx.get(url.replace("Signature=", "Signature=0"))
    assert forged.status_code == 403 and b"<Code>AccessDenied</Code>" in forged.content
    sim.clock.now += 301
    expired = httpx.get(url)
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    fresh = signed_location(client, op_id)
    assert fresh != url and httpx.get(fresh).content == r.content
    # The schema page's shape: a signed downloadUrl straight in the operation's results.
    direct = sim.add_operation(results_shape="downloadUrl", size=5000)
    dl = client.get(f"/operations/v1/{direct}").json()["results"]["downloadUrl"]
    assert hashlib.sha256(httpx.get(dl).content).hexdigest() == sim.file_sha256(direct)


def proc_gzip_ok(data: bytes) -> bool:
    """`gzip -t` agrees (when gzip is installed)."""
    try:
        return subprocess.run(["gzip", "-t"], input=data, capture_output=True).returncode == 0
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("size", [2000, 65_536, 1 << 20, (3 << 20) + 7])
def test_files_of_any_size_are_valid_gzip_of_that_exact_size(sim, size):
    op_id = sim.add_operation(size=size)
    data = b"".join(sim.exports.download_for(op_id).file.iter_bytes())
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sim.file_sha256(op_id)
    assert all(json.loads(line) for line in gzip.decompress(data).splitlines())


def test_download_faults_reset_truncate_and_no_range(sim, client):
    op_id = sim.add_operation(size=200_000, reset_after_bytes=50_000, reset_count=1)
    url = signed_location(client, op_id)
    with pytest.raises(httpx.TransportError):
        httpx.get(url)
    assert 0 < sim.bytes_served(op_id) <= 50_000
    assert len(httpx.get(url).content) == 200_000  # only the first download is reset
    cut = sim.add_operation(size=200_000, truncate_gzip=True)
    url = signed_location(client, cut)
    short = httpx.get(url)
    assert short.status_code == 200 and len(short.content) == int(short.headers["content-length"]) < 200_000
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(short.content)
    whole = httpx.get(url).content
    assert len(whole) == 200_000 and hashlib.sha256(whole).hexdigest() == sim.file_sha256(cut)
    sim.storage_bytes_per_second = 1 << 20
    t0 = time.monotonic()
    assert len(httpx.get(url).content) == 200_000
    assert 0.15 < time.monotonic() - t0 < 2  # throttled to 1 MiB/s
    sim.storage_bytes_per_second = None
    plain = sim.add_operation(size=10_000, range_support=False)
    r = httpx.get(signed_location(client, plain), headers={"Range": "bytes=5000-"})
    assert r.status_code == 200 and len(r.content) == 10_000 and r.headers["accept-ranges"] == "none"


# --- legacy data export -------------------------------------------------------------------------------


def test_legacy_list_pages_twenty_at_a_time_oldest_first(sim, client):
    ids = sim.add_bundles(45, size=1024, start=1_700_000_000, span=600)
    late = sim.add_bundles(1, size=1024, start=1_700_000_000 + 45 * 600, span=600, available_at=sim.clock() + 60)
    seen, start = [], 0
    while True:
        exports = client.get("/api/v1/export/list", params={"start": start}).json()["exports"]
        if not exports:
            break
        assert len(exports) <= 20 and [e["Start"] for e in exports] == sorted(e["Start"] for e in exports)
        seen += [str(e["ID"]) for e in exports]
        start = exports[-1]["Stop"]
    assert seen == ids
    sim.clock.now += 60
    assert [str(e["ID"]) for e in client.get("/api/v1/export/list", params={"start": start}).json()["exports"]] == late
    assert client.get("/api/v1/export/list").status_code == 400
    mid = client.get("/api/v1/export/list", params={"start": 1_700_000_000 + 600 * 10 + 1}).json()["exports"]
    assert str(mid[0]["ID"]) == ids[10]  # the bundle whose Stop is after start, even if Start is before


def test_legacy_get_is_rate_limited_on_the_simulator_clock(sim, client):
    sim.legacy_burst, sim.legacy_per_minute = 3, 2
    ids = sim.add_bundles(6, size=4096)
    got = [client.get("/api/v1/export/get", params={"id": i}) for i in ids[:3]]
    assert [r.status_code for r in got] == [200, 200, 200]
    assert got[0].headers["content-disposition"] == 'attachment; filename="DataExport.json.gz"'
    assert len(json.loads(gzip.decompress(got[0].content))) > 0  # a gzipped JSON array of rows
    assert hashlib.sha256(got[1].content).hexdigest() == sim.bundle_sha256(ids[1])
    limited = client.get("/api/v1/export/get", params={"id": ids[3]})
    assert (limited.status_code, limited.json()["code"], limited.headers["retry-after"]) == (
        429,
        "too_many_requests",
        "30",
    )
    sim.clock.now += 10
    assert client.get("/api/v1/export/get", params={"id": ids[3]}).headers["retry-after"] == "20"
    sim.clock.now += 20
    assert client.get("/api/v1/export/get", params={"id": ids[3]}).status_code == 200
    assert client.get("/api/v1/export/get", params={"id": ids[4]}).status_code == 429
    assert sim.legacy_429s == 3 and sim.count("GET", "/api/v1/export/get") - sim.legacy_429s == 4
    sim.clock.now += 3600
    assert client.get("/api/v1/export/get", params={"id": "999"}).status_code == 404


# --- standalone process and control API ---------------------------------------------------------------


def test_standalone_simulator_and_its_control_api():
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--api-key", "cli-key"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        base = line.split()[-1]
        with httpx.Client(base_url=base, headers={"Authorization": "Basic cli-key"}, timeout=10) as c:
            job = httpx.post(base + "/_sim/batch_jobs", json={"kind": "users", "errors": 3, "page_size": 2}).json()
            assert c.get(f"/v2/users/batch/{job['job_id']}").json()["errors"] == 3
            records = httpx.get(f"{base}/_sim/records/{job['job_id']}", params={"which": "errors"}).json()
            assert walk(c, f"/v2/users/batch/{job['job_id']}/errors")[0] == records["records"]
            created = c.post("/v2/events/batch", json={"requests": [{"name": "a"}] * 5}).json()["job"]
            assert c.get(f"/v2/events/batch/{created['id']}").json()["job"]["status"] == "PROCESSING"
            assert (
                httpx.post(
                    base + "/_sim/faults", json={"path_regex": "/batch/", "status": 429, "retry_after": "7"}
                ).status_code
                == 200
            )
            assert c.get(f"/v2/events/batch/{created['id']}").headers["retry-after"] == "7"
            op = httpx.post(base + "/_sim/operations", json={"size": 5000}).json()["operation_id"]
            assert c.get(f"/operations/v1/{op}").json()["state"] == "COMPLETED"
            assert len(httpx.post(base + "/_sim/bundles", json={"count": 2, "size": 2048}).json()["ids"]) == 2
            assert httpx.post(base + "/_sim/batch_jobs", json={"bogus": 1}).status_code == 400
            assert httpx.post(base + "/_sim/settings", json={"legacy_burst": 1}).json()["legacy_burst"] == 1
            assert httpx.post(base + "/_sim/settings", json={"clock": 1}).status_code == 400
            stats = httpx.get(base + "/_sim/stats").json()
            assert stats["routes"][STATUS_ROUTE]["GET"] == 3 and stats["legacy_429s"] == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
