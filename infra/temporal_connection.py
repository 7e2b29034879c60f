"""Where Temporal is, and how to reach it: temporalio's envconfig, or the embedded dev server.

The settings are Temporal's own (the `temporal` CLI reads the same ones):
environment variables (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY`, `TEMPORAL_TLS*`, ...) over a profile of the TOML file
(`TEMPORAL_CONFIG_FILE`, default `~/.config/temporalio/temporal.toml`;
`TEMPORAL_PROFILE`, default `default`). An API key turns TLS on (Temporal Cloud).

With no address anywhere, the worker starts the bundled dev server and writes
its address to `.temporal/endpoint.json`, so the CLI (`fullstory-jobs start`,
`status`, `result`, `demo`) run from the same directory finds it (and a second
worker there does not start a second server on the same database: see
infra/worker_host.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime

from infra.data_converter import DATA_CONVERTER
from infra.logging_setup import redact
from infra.settings import SettingsError
from infra.tracing import client_interceptors

TEMPORAL_ENV_VARS = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
)  # plus TEMPORAL_GRPC_META_<NAME> headers
STATE_DIR = Path(".temporal")
ENDPOINT_FILE = STATE_DIR / "endpoint.json"
DEFAULT_NAMESPACE = "default"
DEV_SERVER_PORT, DEV_UI_PORT = 7233, 8233  # the embedded dev server's, when free


@dataclass(frozen=True)
class TemporalTarget:
    """Keyword arguments for `Client.connect` (secrets included: never log this object, log `describe()`)."""

    connect: dict[str, Any] = field(repr=False)
    address: str | None
    namespace: str
    ui_url: str | None = None  # known for the embedded dev server only

    @property
    def embedded(self) -> bool:
        return self.address is None

    def secrets(self) -> list[str]:
        return [self.connect["api_key"]] if self.connect.get("api_key") else []

    def describe(self) -> str:
        extras = [
            k
            for k, on in (("TLS", bool(self.connect.get("tls"))), ("API key", bool(self.connect.get("api_key"))))
            if on
        ]
        return f"{self.address} namespace {self.namespace}" + (f" ({', '.join(extras)})" if extras else "")


def load_temporal_target(env: Mapping[str, str] | None = None) -> TemporalTarget:
    """The connection from env vars and profile; `address` None means "start the embedded dev server"."""
    try:
        profile = ClientConfigProfile.load(override_env_vars=env)
        connect: dict[str, Any] = dict(profile.to_client_connect_config())
    except FileNotFoundError as e:
        raise SettingsError(f"Temporal TLS setting: no such file {e.filename}") from None
    except OSError as e:
        raise SettingsError(f"Temporal TLS setting: cannot read {e.filename}: {e.strerror}") from None
    except Exception as e:  # envconfig's ConfigError: a bad TOML file or an unknown profile
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SettingsError(f"Temporal config (TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE): {first}") from None
    address = connect.pop("target_host", None)
    namespace = connect.pop("namespace", None) or DEFAULT_NAMESPACE
    if address is not None and ":" not in address:
        raise SettingsError(f"TEMPORAL_ADDRESS: {address!r} needs a port, e.g. {address}:7233")
    return TemporalTarget(connect, address, namespace)


def for_cli(env: Mapping[str, str] | None = None) -> TemporalTarget:
    """A client's target: as configured, else the embedded dev server a local worker recorded, else localhost."""
    target = load_temporal_target(env)
    if not target.embedded:
        return target
    return recorded_embedded(target) or TemporalTarget(
        target.connect, f"127.0.0.1:{DEV_SERVER_PORT}", target.namespace, f"http://127.0.0.1:{DEV_UI_PORT}"
    )


def recorded_embedded(target: TemporalTarget) -> TemporalTarget | None:
    """The embedded dev server recorded in `.temporal/endpoint.json` (it may be gone: connect to find out)."""
    try:
        recorded = json.loads(ENDPOINT_FILE.read_text())
        return TemporalTarget(
            target.connect, recorded["address"], recorded.get("namespace", target.namespace), recorded.get("ui_url")
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def recorded_owner() -> int | None:
    """The pid of the process that started the recorded embedded dev server, when recorded."""
    try:
        pid = json.loads(ENDPOINT_FILE.read_text()).get("pid")
        return pid if isinstance(pid, int) else None
    except (OSError, ValueError, AttributeError):
        return None


def record_embedded(address: str, namespace: str, ui_url: str) -> None:
    STATE_DIR.mkdir(exist_ok=True)
    ENDPOINT_FILE.write_text(
        json.dumps({"address": address, "namespace": namespace, "ui_url": ui_url, "pid": os.getpid()}) + "\n"
    )


def forget_embedded() -> None:
    ENDPOINT_FILE.unlink(missing_ok=True)


def ui_link(target: TemporalTarget, workflow_id: str, ui_base: str | None = None) -> str | None:
    """The workflow's page in the Temporal UI, when the UI's address is known (TEMPORAL_UI_URL, embedded, Cloud)."""
    base = ui_base or target.ui_url
    if base is None and target.address and target.address.rsplit(":", 1)[0].endswith(".tmprl.cloud"):
        base = "https://cloud.temporal.io"
    if base is None:
        return None
    return f"{base.rstrip('/')}/namespaces/{quote(target.namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"


HINT_CONFIGURED = "check TEMPORAL_ADDRESS (or the profile in TEMPORAL_CONFIG_FILE) and that the server is up"
HINT_LOCAL = "start the worker with `make run` in this directory, or set TEMPORAL_ADDRESS to your Temporal server"


def _connect_reason(error: BaseException) -> str:
    """The useful words of a bridge connect error ("Connection refused"), not tonic's whole debug dump."""
    text = redact(str(error))
    if found := re.search(r'(?:message|error): "([^"]+)"', text):
        return found.group(1)
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]


async def connect(
    target: TemporalTarget,
    runtime: Runtime | None = None,
    *,
    hint: str | None = HINT_CONFIGURED,
    timeout: float | None = None,
) -> Client:
    """A client for `target`; failing, a SettingsError of one line: where, why in a few words, and what to do."""
    try:
        return await asyncio.wait_for(
            Client.connect(
                target.address or "",
                namespace=target.namespace,
                runtime=runtime,
                data_converter=DATA_CONVERTER,
                interceptors=client_interceptors(),  # tracing, when OTEL_TRACES_EXPORTER asks (workers inherit it)
                **target.connect,
            ),
            timeout,
        )
    except TimeoutError:
        reason = f"no answer in {timeout:g}s"
    except Exception as e:  # connection errors from the bridge are plain RuntimeErrors
        reason = _connect_reason(e)
    raise SettingsError(f"cannot connect to Temporal at {target.describe()} ({reason})" + (f": {hint}" if hint else ""))
