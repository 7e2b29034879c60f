"""OpenTelemetry tracing: off unless the standard `OTEL_*` variables turn it on.

    OTEL_TRACES_EXPORTER          otlp | console | otlp,console; unset or `none`: off (nothing is set up)
    OTEL_EXPORTER_OTLP_ENDPOINT   the collector (default http://localhost:4318, OTLP over HTTP, protobuf);
                                  also OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT, ... as the SDK reads them
    OTEL_SERVICE_NAME             default `fullstory-jobs` (OTEL_RESOURCE_ATTRIBUTES adds to the resource)
    OTEL_TRACES_SAMPLER, OTEL_BSP_*  as the SDK reads them; OTEL_SDK_DISABLED=true: off

When on, `setup_tracing()` (the entry point calls it once) installs the global TracerProvider, and
every Temporal client `connect()` builds carries Temporal's TracingInterceptor; the workers built
from that client use it too (temporalio hands a client's worker interceptors to its workers), so a
trace runs StartWorkflow -> RunWorkflow -> StartActivity -> RunActivity -> the Fullstory HTTP spans
(activities/fullstory_client.py), whose tracer is the global one.

Only OTLP over HTTP is installed (opentelemetry-exporter-otlp-proto-http): `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`
is refused in one line rather than silently sending nowhere.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

from infra.settings import SettingsError

DEFAULT_SERVICE_NAME = "fullstory-jobs"
EXPORTERS = ("otlp", "console")
HTTP_PROTOCOLS = ("http/protobuf", "http")
SHUTDOWN_SECONDS = 5.0  # at exit, buffered spans get this long to reach the collector

_provider: TracerProvider | None = None  # the one setup_tracing() installed in this process


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER asks for; [] when tracing is off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names or names == ["none"]:
        return []
    wrong = [n for n in names if n not in EXPORTERS]
    if wrong:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER: {', '.join(wrong)} is not supported here (otlp, console, or none/unset for off)"
        )
    return list(dict.fromkeys(names))


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol and protocol.strip().lower() not in HTTP_PROTOCOLS:
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported here: traces go by OTLP over HTTP "
            "(http/protobuf); point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from the OTEL_EXPORTER_OTLP_* variables


FAILURE_TEXTS = ("exception.message", "exception.stacktrace")


def scrub(span: ReadableSpan) -> ReadableSpan:
    """The span without failure texts: Temporal's interceptor records an activity's or workflow's failure as
    an `exception` event (message, stack) and in the status description, and a failure's message may quote
    Fullstory's answer or the input; the event keeps `exception.type`, the status its code."""
    if not span.events and not span.status.description:
        return span
    events = [
        Event(e.name, {k: v for k, v in (e.attributes or {}).items() if k not in FAILURE_TEXTS}, e.timestamp)
        for e in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class Scrubbed(SpanExporter):
    """Any exporter, fed scrubbed spans (`scrub`): what leaves the process has no failure text."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def build_provider(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """The TracerProvider the `OTEL_*` variables ask for (not installed), or None when tracing is off."""
    env = os.environ if env is None else env
    names = exporter_names(env)
    if not names:
        return None
    service = env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the explicit service name wins over it.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(Scrubbed(_exporter(name, env))))
    return provider


def setup_tracing(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install the global TracerProvider when the `OTEL_*` variables ask for one (once per process)."""
    global _provider
    if _provider is None:
        _provider = build_provider(env)
        if _provider is not None:
            trace.set_tracer_provider(_provider)
    return _provider


@contextlib.contextmanager
def otel_hidden_from_children() -> Iterator[None]:
    """No OTEL_* variable in the environment while the block starts child processes: they configure this
    process's tracing, and the embedded Temporal dev server (Go) reads them too: `console` makes it refuse
    to start ("unsupported OTEL exporter"), `otlp` would send the server's own spans to the collector."""
    hidden = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("OTEL_")}
    try:
        yield
    finally:
        os.environ.update(hidden)


def client_interceptors() -> list[Interceptor]:
    """For `Client.connect`: Temporal's tracing interceptor when tracing is on (the client's workers use it too)."""
    return [TracingInterceptor()] if _provider is not None else []


def shutdown_tracing(timeout: float = SHUTDOWN_SECONDS) -> None:
    """Export what is still buffered (the entry point ends with `os._exit`, which would drop it), giving an
    unreachable collector at most `timeout` seconds (the SDK's own bound is 30 s per processor)."""
    if _provider is not None:
        done = threading.Thread(target=_provider.shutdown, name="tracing-shutdown", daemon=True)
        done.start()
        done.join(timeout)
