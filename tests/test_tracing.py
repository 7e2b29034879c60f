"""OpenTelemetry tracing: one trace from a caller's span through Temporal to the Fullstory calls, no secret
in any span; off unless OTEL_TRACES_EXPORTER asks; `OTEL_TRACES_EXPORTER=console` makes the worker print spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from activities.fullstory_client import FullstoryClient
from helpers import API_KEY, REPO, TemporalClock, WorkerProcess, free_port, wait_until
from infra import tracing
from infra.settings import Settings, SettingsError
from wiring import make_workers
from workflows.segment_export import SegmentExportResult, segment_export_workflow_id

EXPORT = {
    "segment_id": "everyone-in-ohio",
    "type": "TYPE_EVENT",
    "format": "FORMAT_NDJSON",
    "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
    "timezone": "America/New_York",
}
# Nothing of these may appear in any span: the key (and its header), a signed URL's query, the request's data.
FORBIDDEN = (API_KEY, "Authorization", "Basic ", "Signature", "Expires=", "?", "everyone-in-ohio", "America/New_York")


def memory_tracer() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.Scrubbed(exporter)))  # as infra/tracing.py exports
    return exporter, provider


def traced_client(client: Client, provider: TracerProvider) -> Client:
    """The same connection, with Temporal's tracing interceptor on a tracer of the test's own."""
    config = client.config()  # keeps the time-skipping server's own interceptor (it skips time in result())
    return Client(**{**config, "interceptors": [*config["interceptors"], TracingInterceptor(provider.get_tracer("t"))]})


def span_texts(span: ReadableSpan) -> Iterator[str]:
    """Everything a span carries as text: name, status, attributes, events and their attributes."""
    yield span.name
    yield span.status.description or ""
    for attributes in [span.attributes or {}, *(e.attributes or {} for e in span.events)]:
        for key, value in attributes.items():
            yield f"{key}={value}"
    yield from (e.name for e in span.events)


def assert_no_secret(texts: Iterator[str] | list[str], where: str) -> None:
    for text in texts:
        for bad in FORBIDDEN:
            assert bad not in text, f"{bad!r} in {where}: {text[:300]}"


async def test_one_trace_from_the_callers_span_to_the_fullstory_calls(ts_env, sim, tmp_path):
    sim.clock = await TemporalClock.start(ts_env)
    sim.export_defaults.update(duration=600, size=256 << 10, progress_steps=2)
    sim.fault(r"^/segments/v1/exports$", status=429, retry_after=7, method="POST")  # attempt 1: 429, Retry-After 7
    exporter, provider = memory_tracer()
    tracer = provider.get_tracer("caller")
    client = traced_client(ts_env.client, provider)
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        fullstory_data_dir=str(tmp_path), fullstory_task_queue=task_queue, fullstory_export_downloads_per_minute=60_000
    )
    fullstory = FullstoryClient(API_KEY, sim.base_url, sim.base_url, timeout=10, tracer=provider.get_tracer("http"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in make_workers(client, fullstory, settings):  # no interceptor given: the client's is used
                await stack.enter_async_context(w)
            with tracer.start_as_current_span("caller") as caller:
                handle = await client.start_workflow(
                    "SegmentExportWorkflow",
                    {**EXPORT, "destination": str(tmp_path / "out")},
                    id=f"export-{uuid.uuid4().hex}",
                    task_queue=task_queue,
                    result_type=SegmentExportResult,
                )
            result = await asyncio.wait_for(handle.result(), 120)
    finally:
        await fullstory.aclose()
    assert result.bytes == 256 << 10

    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    trace_id = caller.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}, "every span in the caller's trace"

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        return by_id[span.parent.span_id]

    def named(prefix: str) -> list[ReadableSpan]:
        return [s for s in spans if s.name.startswith(prefix)]

    # Temporal's interceptor: the workflow's own spans (RunWorkflow, StartActivity, CompleteWorkflow) are
    # instants under the span that started it (replay-safe); each attempt's RunActivity under its StartActivity.
    (start,) = named("StartWorkflow:SegmentExportWorkflow")
    (run,) = named("RunWorkflow:SegmentExportWorkflow")
    assert parent(start).name == "caller" and parent(run) is start
    assert parent(named("CompleteWorkflow:SegmentExportWorkflow")[0]) is start
    activities = {s.name.split(":", 1)[1] for s in named("RunActivity:")}
    assert {"create_segment_export", "wait_for_operation", "download_to_destination"} <= activities
    for run_activity in named("RunActivity:"):
        assert parent(run_activity).name == run_activity.name.replace("Run", "Start", 1)
        assert parent(parent(run_activity)) is start
    assert all(run.start_time <= s.start_time for s in named("StartActivity:"))

    http = named("fullstory ") + named("storage ")
    for span in http:
        assert parent(span).name.startswith("RunActivity:"), span.name
        assert span.attributes["http.request.method"] in ("GET", "POST")
        assert span.attributes["url.template"] in span.name
        assert span.attributes["temporal.activity.attempt"] >= 1
    creates = named("fullstory POST /segments/v1/exports")
    assert [
        (s.attributes["http.response.status_code"], s.attributes["temporal.activity.attempt"]) for s in creates
    ] == [
        (429, 1),
        (200, 2),
    ]
    assert creates[0].attributes["fullstory.retry_after_seconds"] == 7.0
    assert creates[0].attributes["error.type"] == "429" and creates[0].status.status_code == StatusCode.ERROR
    polls = named("fullstory GET /operations/v1/{id}")
    assert polls and all(parent(s).name == "RunActivity:wait_for_operation" for s in polls)
    results = named("fullstory GET /search/v1/exports/{id}/results")
    assert results
    (download,) = named("storage GET /_storage/{id}/{id}")  # the signed URL: its path's template, no query
    assert parent(download).name == "RunActivity:download_to_destination"
    assert download.attributes["http.response.status_code"] == 200

    for span in spans:
        assert_no_secret(span_texts(span), span.name)
    # A failed attempt is visible (status, the exception's type), its text is not (it names the segment).
    failed = [s for s in named("RunActivity:create_segment_export") if s.events]
    assert failed and failed[0].status.status_code == StatusCode.ERROR
    assert failed[0].events[0].attributes["exception.type"].endswith("ApplicationError")
    # The HTTP spans record no exception (its text may quote Fullstory's answer), only the error's type.
    assert all(not s.events for s in http)


async def test_a_failed_call_records_its_type_not_its_text(sim):
    """Connection refused: `error.type` is the exception's class; nothing of the message or the URL's query."""
    exporter, provider = memory_tracer()
    dead = f"http://127.0.0.1:{_closed_port()}"
    client = FullstoryClient(API_KEY, dead, dead, timeout=2, tracer=provider.get_tracer("http"))
    try:
        with pytest.raises(Exception) as info:
            await client.call("GET", "/v2/events/batch/abc123=", what="get events batch job", params={"x": "y"})
    finally:
        await client.aclose()
    assert getattr(info.value, "type", None) == "FullstoryUnavailable"
    (span,) = exporter.get_finished_spans()
    assert span.name == "fullstory GET /v2/events/batch/{id}"
    assert span.attributes["error.type"] == "ConnectError"
    assert span.attributes["fullstory.error"] == "FullstoryUnavailable"
    assert span.status.status_code == StatusCode.ERROR and not span.status.description and not span.events
    assert "temporal.activity.attempt" not in span.attributes  # not in an activity
    assert_no_secret(span_texts(span), span.name)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- setting it up from the OTEL_* variables ---------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": " "}])
def test_off_unless_the_variables_ask(env):
    assert tracing.build_provider(env) is None


def test_sdk_disabled_wins():
    assert tracing.build_provider({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None


@pytest.mark.parametrize(
    "env, wanted",
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: jaeger is not supported"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_bad_settings_are_one_line(env, wanted):
    with pytest.raises(SettingsError) as info:
        tracing.build_provider(env)
    assert wanted in str(info.value) and "\n" not in str(info.value)


def test_service_name_defaults_and_is_configurable():
    provider = tracing.build_provider({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None and provider.resource.attributes["service.name"] == "fullstory-jobs"
    provider.shutdown()
    provider = tracing.build_provider({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "crm-importer"})
    assert provider is not None and provider.resource.attributes["service.name"] == "crm-importer"
    provider.shutdown()


def test_no_interceptor_while_tracing_is_off():
    assert tracing._provider is None  # nothing in the test process called setup_tracing
    assert tracing.client_interceptors() == []


@contextlib.contextmanager
def otlp_collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback stand-in for an OTLP/HTTP collector: records every POST (path, body)."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_sends_spans_to_the_endpoint_over_http(monkeypatch):
    with otlp_collector() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)  # the exporter reads its own variables
        provider = tracing.build_provider({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "otlp-check"})
        assert provider is not None
        with provider.get_tracer("t").start_as_current_span("fullstory GET /v2/users/{id}"):
            pass
        provider.shutdown()  # flushes
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]
    assert b"fullstory GET /v2/users/{id}" in body and b"otlp-check" in body


# --- the worker process, OTEL_TRACES_EXPORTER=console ------------------------------------------


def console_spans(log: str) -> list[dict]:
    """The ConsoleSpanExporter's spans (indented JSON objects) among the worker's log lines."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := log.find('{\n    "name": ', at)) >= 0:
        span, end = decoder.raw_decode(log, at)
        spans.append(span)
        at = end
    return spans


@pytest.mark.e2e
async def test_console_exporter_makes_the_worker_print_spans(dev_env, sim, worker_factory, tmp_path):
    worker = worker_factory(
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="fullstory-jobs-e2e",
        OTEL_BSP_SCHEDULE_DELAY="200",  # ms: print soon after a span ends
    ).start()
    exporter, provider = memory_tracer()
    client = traced_client(dev_env.client, provider)
    op_id = sim.add_operation(duration=1, size=64 << 10, url_ttl=300)
    with provider.get_tracer("caller").start_as_current_span("caller") as caller:
        handle = await client.start_workflow(
            "SegmentExportWorkflow",
            {"operation_id": op_id, "destination": str(tmp_path / "out")},
            id=segment_export_workflow_id(op_id),
            task_queue=worker_factory.task_queue,
            result_type=SegmentExportResult,
        )
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.sha256 == sim.file_sha256(op_id)

    def printed() -> set[str]:
        return {s["name"] for s in console_spans(worker.log())}

    wanted = {
        "RunWorkflow:SegmentExportWorkflow",
        "RunActivity:download_to_destination",
        "storage GET /_storage/{id}/{id}",
    }
    started = time.monotonic()
    await wait_until(lambda: wanted <= printed(), timeout=20, what="the worker to print its spans")
    assert time.monotonic() - started < 20
    worker.stop()  # SIGTERM to its pid; what is still buffered is flushed on the way out
    assert worker.proc.returncode == 0

    spans = console_spans(worker.log())
    trace_id = f"0x{caller.get_span_context().trace_id:032x}"
    ours = [s for s in spans if s["context"]["trace_id"] == trace_id]
    names = {s["name"] for s in ours}
    assert {"RunWorkflow:SegmentExportWorkflow", "RunActivity:wait_for_operation"} <= names, names
    assert "fullstory GET /operations/v1/{id}" in names and "storage GET /_storage/{id}/{id}" in names
    assert all(s["resource"]["attributes"]["service.name"] == "fullstory-jobs-e2e" for s in spans)
    assert_no_secret([json.dumps(s) for s in spans], "the worker's printed spans")
    # The test's own side of the trace: the caller's span and StartWorkflow under it.
    assert {"caller", "StartWorkflow:SegmentExportWorkflow"} <= {s.name for s in exporter.get_finished_spans()}


@pytest.mark.e2e
def test_make_run_with_the_console_exporter_prints_the_demos_trace(tmp_path):
    """`OTEL_TRACES_EXPORTER=console make run` (the embedded dev server, the simulator), then `demo` with the
    same variable: the worker prints the demo's workflows, activities and Fullstory calls in the demo's traces.
    (The dev server reads OTEL_* too and refuses `console`: the worker hides them from it.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FULLSTORY_", "TEMPORAL_", "OTEL_"))}
    env.update(
        HOME=env.get("HOME", "/tmp"),
        FULLSTORY_DATA_DIR=str(tmp_path / "data"),
        TEMPORAL_UI_PORT=str(free_port()),
        OTEL_TRACES_EXPORTER="console",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    worker = WorkerProcess(tmp_path / "worker.log", env, cwd=tmp_path)
    try:
        worker.start(timeout=60)
        demo = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), "demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stderr[-2000:]
        starts = [s for s in console_spans(demo.stdout) if s["name"] == "StartWorkflow:BatchImportWorkflow"]
        assert len(starts) == 2  # the demo's events and users imports, each the root of its trace
        traces = {s["context"]["trace_id"] for s in starts}

        def traced() -> set[str]:
            return {s["name"] for s in console_spans(worker.log()) if s["context"]["trace_id"] in traces}

        wanted = {
            "RunWorkflow:BatchImportWorkflow",
            "RunActivity:create_batch_job",
            "fullstory POST /v2/events/batch",
            "fullstory POST /v2/users/batch",
            "fullstory GET /v2/events/batch/{id}/errors",
        }
        deadline = time.monotonic() + 20
        while not wanted <= traced() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wanted <= traced(), sorted(traced())
    finally:
        worker.stop()  # SIGTERM to its pid (it stops its dev server and simulator)
    assert worker.proc.returncode == 0
    assert_no_secret([json.dumps(s) for s in console_spans(worker.log())], "the worker's printed spans")
