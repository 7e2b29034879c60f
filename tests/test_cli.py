"""The `fullstory-jobs` command: help, one-line errors, inputs from flags, and the whole loop of
`make run` + `fullstory-jobs start ... / status / result` from a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from cli import MAX_INLINE_INPUT, UsageError, build_input, make_parser, stage_big_requests
from helpers import WorkerProcess
from infra.settings import Settings
from workflows.batch_job_input import BatchImportInput
from workflows.registry import BY_COMMAND
from workflows.segment_export import SegmentExportInput

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FULLSTORY_", "TEMPORAL_"))}
    return {**env, "HOME": env.get("HOME", "/tmp"), **extra}


def cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "argv",
    [[], ["worker"], ["demo"], ["start"], ["status"], ["result"], *[["start", command] for command in BY_COMMAND]],
    ids=lambda a: " ".join(a) or "top",
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fullstory-jobs")


def test_start_help_lists_every_input_field_with_its_description(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["start", "batch-import", "--help"])
    out = capsys.readouterr().out
    for flag in ("--kind", "--job-id", "--requests", "--requests-url", "--collect-imports", "--timeout", "--wait"):
        assert flag in out
    assert "Watch this existing job" in out and "{events,users}" in out


def parse_start(*argv: str):
    args = make_parser().parse_args(["start", *argv])
    job = BY_COMMAND[args.start_what]
    return build_input(job, args)


def test_flags_become_a_validated_input(tmp_path):
    model = parse_start("batch-import", "--kind", "users", "--job-id", "J1=", "--timeout", "PT6H", "--collect-imports")
    assert model == BatchImportInput(kind="users", job_id="J1=", timeout=21600, collect_imports=True)
    (tmp_path / "reqs.json").write_text(json.dumps([{"uid": "u1"}, {"uid": "u2"}]))
    model = parse_start("batch-import", "--kind", "users", "--requests", f"@{tmp_path / 'reqs.json'}")
    assert model.requests == [{"uid": "u1"}, {"uid": "u2"}]
    model = parse_start(
        "segment-export",
        "--segment-id",
        "seg",
        "--format",
        "FORMAT_CSV",
        "--time-range",
        '{"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}',
        "--no-verify-gzip",
    )
    assert isinstance(model, SegmentExportInput) and model.format == "FORMAT_CSV" and model.verify_gzip is False
    # --input gives the whole input; flags override it.
    model = parse_start(
        "data-export-sync", "--input", '{"start": 1700000000, "follow": true}', "--no-follow", "--stop", "1700003600"
    )
    assert (model.start, model.stop, model.follow) == (1700000000, 1700003600, False)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["batch-import", "--kind", "events"], "exactly one of job_id"),
        (["batch-import", "--kind", "events", "--requests", "[{"], "--requests: not valid JSON"),
        (["batch-import", "--kind", "events", "--requests", "@/nonexistent.json"], "cannot read /nonexistent.json"),
        (["segment-export", "--operation-id", "op", "--timeout", "-5"], "timeout"),
        (["data-export-sync", "--input", "[1]"], "must be a JSON object"),
    ],
)
def test_bad_inputs_are_usage_errors(argv, expected):
    with pytest.raises(UsageError, match=None) as err:
        parse_start(*argv)
    assert expected in str(err.value) and "\n" not in str(err.value)


def big_batch(destination: str | None = None) -> BatchImportInput:
    requests = [{"uid": f"u{i}", "display_name": "x" * 100} for i in range(MAX_INLINE_INPUT // 100)]
    return BatchImportInput(kind="users", requests=requests, destination=destination)


def staged(model: BatchImportInput, settings: Settings) -> tuple[BatchImportInput, bytes]:
    out = stage_big_requests(BY_COMMAND["batch-import"], model, settings)
    assert isinstance(out, BatchImportInput) and out.requests is None and out.requests_url
    assert out.kind == model.kind and out.destination == model.destination
    with fsspec.open(out.requests_url, "rb") as fh:
        return out, fh.read()


def test_big_inline_requests_are_staged_in_the_data_dir(tmp_path, capsys):
    small = BatchImportInput(kind="users", requests=[{"uid": "u1"}])
    settings = Settings(fullstory_data_dir=str(tmp_path / "data"), fullstory_allowed_locations=None)
    assert stage_big_requests(BY_COMMAND["batch-import"], small, settings) is small
    model = big_batch()
    out, body = staged(model, settings)
    assert out.requests_url.startswith(str((tmp_path / "data" / "uploads").resolve()) + "/requests-")
    assert json.loads(body) == {"requests": model.requests, "shared": None}
    assert [p.name for p in (tmp_path / "data" / "uploads").iterdir()] == [Path(out.requests_url).name]
    assert f"staged at {out.requests_url}" in capsys.readouterr().err
    with pytest.raises(UsageError, match="could not be staged .*FULLSTORY_ALLOWED_LOCATIONS"):
        stage_big_requests(
            BY_COMMAND["batch-import"],
            model,
            Settings(fullstory_data_dir=str(tmp_path), fullstory_allowed_locations="s3://x"),
        )


def test_big_inline_requests_are_staged_beside_an_object_store_destination(tmp_path, s3_bucket):
    fs, bucket = s3_bucket
    model = big_batch(f"s3://{bucket}/out/")
    out, body = staged(model, Settings(fullstory_data_dir=str(tmp_path / "data"), fullstory_allowed_locations=None))
    assert out.requests_url.startswith(f"s3://{bucket}/out/uploads/requests-")
    assert json.loads(body)["requests"] == model.requests
    assert fs.find(bucket) == [out.requests_url.removeprefix("s3://")]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["start", "batch-import", "--kind", "frogs", "--job-id", "x"], "invalid choice: 'frogs'"),
        (["start", "batch-import", "--kind", "events"], "exactly one of job_id"),
        (["frobnicate"], "invalid choice"),
        (["--log-level", "LOUD"], "invalid choice"),
        (["status"], "required: workflow_id"),
    ],
)
def test_bad_arguments_get_a_one_line_error_and_exit_2(argv, expected):
    proc = cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("fullstory-jobs")]) == 1


def test_no_temporal_is_one_line_and_exit_2(tmp_path):
    proc = cli("status", "some-id", cwd=tmp_path, env=clean_env(TEMPORAL_ADDRESS="127.0.0.1:1"))
    assert proc.returncode == 2 and "cannot connect to Temporal at 127.0.0.1:1" in proc.stderr
    assert "Connection refused" in proc.stderr and "TEMPORAL_ADDRESS" in proc.stderr and "tonic" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.e2e
def test_make_run_then_start_status_and_result_from_a_fresh_directory(tmp_path):
    """No settings at all, as on a fresh clone: the worker starts the dev server and the simulator; the CLI,
    run from the same directory, finds that server and gets a batch import's result."""
    worker = WorkerProcess(tmp_path / "worker.log", clean_env(FULLSTORY_DATA_DIR=str(tmp_path / "data")), cwd=tmp_path)
    try:
        worker.start(timeout=90)
        log = worker.log()
        assert "UI: http://127.0.0.1:" in log and "SIMULATOR" in log
        assert (tmp_path / ".temporal" / "temporal.db").exists()

        started = cli("start", "batch-import", "--kind", "events", "--job-id", "X", cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        assert "workflow id: fullstory-batch-events-X" in started.stdout
        assert "UI: http://127.0.0.1:" in started.stdout and "/workflows/fullstory-batch-events-X" in started.stdout

        status = cli("status", "fullstory-batch-events-X", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        progress = json.loads(status.stdout)
        assert progress["type"] == "BatchImportWorkflow" and progress["progress"]["job_id"] == "X"
        assert isinstance(progress["pending_activities"], list)  # what it waits on: test_embedded_server.py

        result = cli("result", "fullstory-batch-events-X", "--timeout", "60", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        # The demo simulator's jobs run 5 s and fail 3 records, which the workflow collected.
        assert (out["job_id"], out["status"], out["errors"], out["records_collected"]) == ("X", "FAILED", 3, 3)
        assert Path(out["errors_location"]).read_text().count("\n") == 3

        # Starting the same job again (now finished) watches it again under the same id: no new job at Fullstory.
        again = cli("start", "batch-import", "--kind", "events", "--job-id", "X", "--wait", cwd=tmp_path)
        assert again.returncode == 0 and json.loads(again.stdout[again.stdout.index("{") :])["job_id"] == "X"

        missing = cli("result", "no-such-workflow", cwd=tmp_path)
        assert missing.returncode == 2 and "no workflow 'no-such-workflow'" in missing.stderr
    finally:
        worker.stop()
    assert worker.proc.returncode == 0
    assert not (tmp_path / ".temporal" / "endpoint.json").exists()  # forgotten when the worker stops


@pytest.mark.e2e
def test_demo_runs_two_imports_to_their_results(tmp_path):
    proc = cli("demo", cwd=tmp_path, env=clean_env(FULLSTORY_DATA_DIR=str(tmp_path / "data")), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    decoder, text, results = json.JSONDecoder(), proc.stdout, []
    while (start := text.find("{\n")) != -1:
        result, end = decoder.raw_decode(text, start)
        results.append(result)
        text = text[end:]
    # 25 events and 12 users sent; the demo simulator fails 3 of each; errors and imports are both collected.
    assert [(r["kind"], r["status"], r["imports"], r["errors"], r["records_collected"]) for r in results] == [
        ("events", "FAILED", 22, 3, 25),
        ("users", "FAILED", 9, 3, 12),
    ]


def test_load_has_a_short_form_and_the_json_form():
    base = ["segment-export-sync", "--segment-id", "everyone", "--start", "2026-11-01T00:00:00Z"]
    short = parse_start(*base, "--load", "duckdb")
    assert short.load.destination == "duckdb" and short.load.table_for("TYPE_EVENT") == "events"
    full = parse_start(*base, "--load", '{"destination": "parquet", "location": "/tmp/lake", "table": "web"}')
    assert full.load.location == "/tmp/lake" and full.load.table_for("TYPE_EVENT") == "web"
    with pytest.raises(UsageError, match="not one of"):
        parse_start(*base, "--load", "oracle")
