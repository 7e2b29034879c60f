"""Worker start-up: bad settings are one clear line and exit 2; logs never carry secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from activities.logging_setup import add_secret, configure_logging, redact

REPO = Path(__file__).resolve().parents[1]


def run_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FULLSTORY_", "TEMPORAL_"))}
    return subprocess.run([sys.executable, str(REPO / "worker.py"), *args], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


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


def test_redaction_of_key_and_signed_url_query(capsys):
    add_secret("super-secret-api-key-42")
    configure_logging("INFO", json_output=True)
    logging.getLogger("t").info("calling with key super-secret-api-key-42 at https://s3.test/x.gz?X-Amz-Signature=abc&Expires=9")
    err = capsys.readouterr().err
    line = json.loads(err.strip().splitlines()[-1])
    assert "super-secret-api-key-42" not in err and "X-Amz-Signature" not in err
    assert "https://s3.test/x.gz?<redacted>" in line["event"]
    assert redact("see https://h/p?sig=1 and https://h/q") == "see https://h/p?<redacted> and https://h/q"
