"""Worker start-up: bad settings are one clear line and exit 2; logs never carry secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.logging_setup import add_secret, configure_logging, redact

REPO = Path(__file__).resolve().parents[1]


def run_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FULLSTORY_", "TEMPORAL_"))}
    return subprocess.run(
        [sys.executable, str(REPO / "worker.py"), *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_base_url_is_one_line_and_exit_2():
    proc = run_worker({"FULLSTORY_BASE_URL": "api.fullstory.com"})
    assert proc.returncode == 2
    assert "FULLSTORY_BASE_URL" in proc.stderr and "http" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unreadable_key_file_is_one_line_and_exit_2(tmp_path):
    proc = run_worker({"FULLSTORY_API_KEY_FILE": str(tmp_path / "missing")})
    assert proc.returncode == 2 and "FULLSTORY_API_KEY_FILE" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_temporal_is_one_line_and_exit_2():
    proc = run_worker({"TEMPORAL_ADDRESS": "127.0.0.1:1", "FULLSTORY_API_KEY": "k" * 20})
    assert proc.returncode == 2 and "cannot connect to Temporal" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_command_is_a_usage_error():
    proc = run_worker({}, "frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_worker_py_is_the_same_entry_as_the_cli():
    """`python worker.py` is `fullstory-jobs`: one parser, `worker` its default command, no exec, no argv scanning."""
    own = run_worker({}, "--help")
    assert own.returncode == 0 and own.stdout.startswith("usage: fullstory-jobs")
    assert all(c in own.stdout for c in ("worker", "demo", "start", "status", "result"))
    demo = run_worker({}, "--log-level", "ERROR", "demo", "--help")  # `make demo`
    assert demo.returncode == 0 and demo.stdout.startswith("usage: fullstory-jobs demo")
    source = (REPO / "worker.py").read_text()
    assert "execv" not in source and "sys.argv" not in source


def test_the_worker_command_is_the_default():
    from cli import make_parser

    assert make_parser().parse_args([]).command is None  # main() runs the worker when no command is given
    assert make_parser().parse_args(["worker"]).command == "worker"


def test_redaction_of_key_and_signed_url_query(capsys):
    add_secret("super-secret-api-key-42")
    configure_logging("INFO", json_output=True)
    logging.getLogger("t").info(
        "calling with key super-secret-api-key-42 at https://s3.test/x.gz?X-Amz-Signature=abc&Expires=9"
    )
    err = capsys.readouterr().err
    line = json.loads(err.strip().splitlines()[-1])
    assert "super-secret-api-key-42" not in err and "X-Amz-Signature" not in err
    assert "https://s3.test/x.gz?<redacted>" in line["event"]
    assert redact("see https://h/p?sig=1 and https://h/q") == "see https://h/p?<redacted> and https://h/q"


def test_temporal_settings_come_from_envconfig_env_and_profile(tmp_path):
    from infra.temporal_connection import load_temporal_target

    assert load_temporal_target({}).embedded  # nothing configured: the embedded dev server
    cloud = load_temporal_target(
        {
            "TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233",
            "TEMPORAL_NAMESPACE": "ns.acct",
            "TEMPORAL_API_KEY": "cloud-key-123",
        }
    )
    assert (cloud.address, cloud.namespace, cloud.connect["tls"], cloud.connect["api_key"]) == (
        "ns.acct.tmprl.cloud:7233",
        "ns.acct",
        True,
        "cloud-key-123",
    )
    assert "cloud-key-123" not in cloud.describe() and "cloud-key-123" not in repr(cloud)
    toml = tmp_path / "temporal.toml"
    toml.write_text('[profile.prod]\naddress = "temporal.prod:7233"\nnamespace = "jobs"\n')
    prod = load_temporal_target({"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "prod"})
    assert (prod.address, prod.namespace, prod.connect.get("tls")) == ("temporal.prod:7233", "jobs", None)
    # Env vars override the profile.
    assert (
        load_temporal_target(
            {"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "prod", "TEMPORAL_NAMESPACE": "other"}
        ).namespace
        == "other"
    )


def test_mtls_files_are_read_at_start(tmp_path):
    from infra.temporal_connection import load_temporal_target

    (tmp_path / "c.pem").write_text("CERT")
    (tmp_path / "k.pem").write_text("KEY")
    target = load_temporal_target(
        {
            "TEMPORAL_ADDRESS": "t:7233",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "c.pem"),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / "k.pem"),
        }
    )
    assert target.connect["tls"].client_cert == b"CERT" and target.connect["tls"].client_private_key == b"KEY"
    assert "TLS" in target.describe()


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {
                "TEMPORAL_ADDRESS": "127.0.0.1:7233",
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/client.pem",
                "TEMPORAL_TLS_CLIENT_KEY_PATH": "/nonexistent/client.key",
            },
            "no such file /nonexistent/client.pem",
        ),
        ({"TEMPORAL_PROFILE": "nope"}, "Profile 'nope' not found"),
        ({"TEMPORAL_CONFIG_FILE": "BAD_TOML"}, "TOML parse error"),
        ({"TEMPORAL_ADDRESS": "temporal.example.com"}, "needs a port"),
        ({"FULLSTORY_METRICS_PORT": "lots"}, "FULLSTORY_METRICS_PORT"),
        ({"FULLSTORY_HEALTH_PORT": "70000"}, "FULLSTORY_HEALTH_PORT"),
    ],
)
def test_bad_temporal_and_port_settings_are_one_line_and_exit_2(env, expected, tmp_path):
    if env.get("TEMPORAL_CONFIG_FILE") == "BAD_TOML":
        (tmp_path / "bad.toml").write_text("[profile.prod\naddress =")
        env = {"TEMPORAL_CONFIG_FILE": str(tmp_path / "bad.toml")}
    proc = run_worker({"FULLSTORY_API_KEY": "k" * 20, **env})
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.e2e  # the dev server and a worker subprocess
def test_a_taken_health_port_is_one_line_and_exit_2(dev_env):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_worker(
            {
                "FULLSTORY_API_KEY": "k" * 20,
                "FULLSTORY_HEALTH_PORT": str(port),
                "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            }
        )
    assert proc.returncode == 2 and f"FULLSTORY_HEALTH_PORT: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
