"""Schedules: `fullstory-jobs schedule`, and `{date}`/`{datetime}` filled from each run's scheduled time.

Fast: the placeholder filling, the schedule command's argument errors and the input it schedules, and a
run not started by a schedule refusing a placeholder (time-skipping server). End to end (`e2e`, the dev
server, a worker subprocess, the simulator): a schedule made by the CLI, backfilled for three nights,
starts three bulk imports, each reading its own night's file, with ids from the scheduled time; a trigger
while a run is running is skipped (overlap: skip).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import ScheduleBackfill, ScheduleOverlapPolicy, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from cli import OVERLAP, UsageError, build_input, cmd_start, main, make_parser, schedule_input, schedule_policy
from helpers import REPO, running_worker
from infra.settings import Settings
from vocabulary.contract import idempotency_key
from vocabulary.placeholders import fields_with_placeholders, fill_placeholders, placeholder_values
from workflows.bulk_import_input import BulkImportResult
from workflows.registry import BY_COMMAND

NIGHT = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


# --- the placeholders ------------------------------------------------------------------------------


def test_placeholders_are_the_scheduled_date_and_a_file_safe_datetime_in_utc():
    assert placeholder_values(NIGHT) == {"{date}": "2026-12-03", "{datetime}": "2026-12-03T02-00-00Z"}
    # The same instant given in another zone: still UTC.
    eastern = NIGHT.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert placeholder_values(eastern) == placeholder_values(NIGHT)


def test_fill_placeholders_fills_top_level_strings_only():
    raw = {
        "kind": "users",
        "source": "s3://crm/users-{date}.ndjson.gz",
        "destination": "/imports/{datetime}/{date}",
        "batch_size": 1000,
        "shared": {"note": "{date}"},  # items and shared data are sent as they are
        "requests": [{"uid": "{date}"}],
    }
    filled = fill_placeholders(raw, NIGHT)
    assert filled == {
        **raw,
        "source": "s3://crm/users-2026-12-03.ndjson.gz",
        "destination": "/imports/2026-12-03T02-00-00Z/2026-12-03",
    }
    assert raw["source"].endswith("{date}.ndjson.gz")  # the input itself is not changed
    assert fields_with_placeholders(raw) == ["source", "destination"]
    plain = {"kind": "users", "source": "/crm/users.ndjson", "note": "{other} stays"}
    assert fill_placeholders(plain, NIGHT) is plain
    assert fill_placeholders([1, "{date}"], NIGHT) == [1, "{date}"]


# --- the command's arguments and the input it schedules -------------------------------------------


def schedule_args(*argv: str):
    return make_parser().parse_args(["schedule", *argv])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cron", "0 2 * * *", "--every", "P1D"], "exactly one of --cron EXPR or --every DURATION"),
        ([], "exactly one of --cron EXPR or --every DURATION"),
        (["--every", "soon"], "--every: 'soon' is not a duration"),
        (["--every", "-5"], "--every: '-5' is not a duration"),
        (["--cron", "   "], "--cron: empty expression"),
        (["--every", "P1D", "--catchup-window", "whenever"], "--catchup-window: 'whenever' is not a duration"),
        (["--every", "P1D", "--catchup-window", "PT5S"], "Temporal's minimum is 10 seconds"),
        (["--every", "P1D", "--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_schedule_arguments_are_one_line_and_exit_2(argv, expected, capsys):
    """Refused before any connection to Temporal (none is configured here: nothing is created)."""
    rc = main(["schedule", "bulk-import", "--id", "n", "--kind", "users", "--source", "/crm/u-{date}.ndjson", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["", *BY_COMMAND])
def test_every_schedule_command_has_help_with_its_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args(["schedule", *([command] if command else []), "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: fullstory-jobs schedule")
    if command:
        out = " ".join(out.split())  # argparse wraps the help
        assert "default: skip" in out and "P1D" in out and "default: on" in out and "--cron" in out


def test_schedule_needs_an_id_and_a_workflow(capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args(["schedule", "bulk-import", "--cron", "0 2 * * *"])
    assert exit_.value.code == 2 and "--id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_parser().parse_args(["schedule", "batch-slots", "--id", "x", "--every", "P1D"])  # not startable


def test_defaults_are_skip_a_one_day_catch_up_and_pause_on_failure():
    args = schedule_args("bulk-import", "--id", "n", "--cron", "0 2 * * *")
    policy = schedule_policy(args)
    assert policy.overlap == ScheduleOverlapPolicy.SKIP == OVERLAP[args.overlap]
    assert policy.catchup_window == timedelta(days=1) and policy.pause_on_failure is True
    assert not args.paused
    off = schedule_policy(schedule_args("bulk-import", "--id", "n", "--every", "PT6H", "--no-pause-on-failure"))
    assert off.pause_on_failure is False


def test_the_schedule_keeps_the_placeholders_and_the_validated_values(tmp_path):
    """A placeholder is no error: the input is validated as for a run now, the schedule keeps the template."""
    args = schedule_args(
        "bulk-import",
        "--id",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--kind",
        "users",
        "--source",
        "/crm/users-{date}.ndjson.gz",
        "--batch-size",
        "1000",
        "--timeout",
        "PT6H",
    )
    settings = Settings(fullstory_data_dir=str(tmp_path))
    action_input, model = schedule_input(BY_COMMAND["bulk-import"], args, settings)
    assert action_input == {
        "kind": "users",
        "source": "/crm/users-{date}.ndjson.gz",
        "batch_size": 1000,
        "timeout": "PT6H",
    }
    assert model.source == "/crm/users-{date}.ndjson.gz"  # what the UI's texts show
    # A placeholder in a datetime field: validated filled, scheduled as given.
    args = schedule_args(
        "segment-export-sync",
        "--id",
        "nightly-export",
        "--every",
        "P1D",
        "--segment-id",
        "everyone",
        "--start",
        "{date}T00:00:00Z",
        "--window",
        "P1D",
    )
    action_input, _ = schedule_input(BY_COMMAND["segment-export-sync"], args, settings)
    assert action_input["start"] == "{date}T00:00:00Z" and action_input["segment_id"] == "everyone"
    bad = schedule_args("segment-export-sync", "--id", "x", "--every", "P1D", "--segment-id", "s", "--start", "{date}")
    with pytest.raises(UsageError, match="start"):
        schedule_input(BY_COMMAND["segment-export-sync"], bad, settings)


async def test_start_refuses_a_placeholder_before_starting(tmp_path):
    args = make_parser().parse_args(
        ["start", "bulk-import", "--kind", "users", "--source", "/crm/users-{date}.ndjson.gz"]
    )
    with pytest.raises(UsageError, match=r"source: \{date\} and \{datetime\} are filled only in a run started by"):
        await cmd_start(args, Settings(fullstory_data_dir=str(tmp_path)))
    assert build_input(BY_COMMAND["bulk-import"], args).source.endswith("{date}.ndjson.gz")  # the model allows it


async def test_a_run_not_started_by_a_schedule_refuses_a_placeholder(ts_env, sim, tmp_path):
    async with running_worker(ts_env.client, sim.base_url, tmp_path / "data") as tq:
        handle = await ts_env.client.start_workflow(
            "BulkImportWorkflow",
            {"kind": "users", "source": str(tmp_path / "users-{date}.ndjson")},
            id=f"bulk-{uuid.uuid4().hex[:8]}",
            task_queue=tq,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput"
    assert "only in a run started by a schedule" in cause.message and "temporal schedule trigger" in cause.message
    assert not sim.batch.create_requests  # nothing sent to Fullstory


# --- end to end: a schedule on the dev server, backfilled -------------------------------------------


def write_users(path: Path, n: int, night: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"uid": f"{night}-{i}", "display_name": f"User {i}"}) + "\n" for i in range(n)))


async def until_idle(handle, actions: int, timeout: float = 120):
    """The schedule's description once it has taken `actions` actions and none is running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        description = await handle.describe()
        if len(description.info.recent_actions) >= actions and not description.info.running_actions:
            return description
        if loop.time() > deadline:
            raise TimeoutError(f"schedule took {len(description.info.recent_actions)} of {actions} actions")
        await asyncio.sleep(0.3)


@pytest.mark.e2e
async def test_a_backfill_of_three_nights_imports_each_nights_file_and_overlap_skips(
    dev_env, sim, worker_factory, tmp_path
):
    worker = worker_factory().start()
    crm = tmp_path / "crm"
    # Three past nights, 02:00 UTC, and their files (3, 5 and 7 users); and today's, for a triggered run.
    first = (datetime.now(UTC) - timedelta(days=10)).replace(hour=2, minute=0, second=0, microsecond=0)
    nights = [first + timedelta(days=i) for i in range(3)]
    sizes = [3, 5, 7]
    for night, n in zip(nights, sizes, strict=True):
        write_users(crm / f"users-{night:%Y-%m-%d}.ndjson", n, f"{night:%Y-%m-%d}")
    today = datetime.now(UTC)
    for day in (today, today + timedelta(days=1)):  # a trigger just before midnight UTC still finds its file
        write_users(crm / f"users-{day:%Y-%m-%d}.ndjson", 4, f"{day:%Y-%m-%d}")

    schedule_id = f"nightly-users-{uuid.uuid4().hex[:6]}"
    proc = cli_schedule(
        worker,
        tmp_path,
        schedule_id,
        "--cron",
        "0 2 * * *",
        "--paused",  # so the real 02:00 never fires during the test; backfill and trigger still run
        "--kind",
        "users",
        "--source",
        str(crm / "users-{date}.ndjson"),
        "--destination",
        str(tmp_path / "imports"),
        "--batch-size",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"schedule {schedule_id} created paused: BulkImportWorkflow cron '0 2 * * *' (UTC)" in out
    assert "overlap skip, catch-up window P1D, pause on failure" in out and "next runs (once unpaused): " in out
    for command in ("list", "describe", "toggle", "trigger", "backfill", "delete"):
        assert f"temporal schedule {command} --address " in out

    handle = dev_env.client.get_schedule_handle(schedule_id)
    described = await handle.describe()
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert described.schedule.policy.catchup_window == timedelta(days=1)
    assert described.schedule.policy.pause_on_failure and described.schedule.state.paused

    # `temporal schedule backfill --overlap-policy BufferAll`: the three nights, one after another.
    await handle.backfill(
        ScheduleBackfill(
            start_at=nights[0] - timedelta(hours=1),
            end_at=nights[-1] + timedelta(hours=1),
            overlap=ScheduleOverlapPolicy.BUFFER_ALL,
        )
    )
    described = await until_idle(handle, 3)
    actions = described.info.recent_actions
    assert [a.scheduled_at for a in actions] == nights
    for night, n, action in zip(nights, sizes, actions, strict=True):
        # The id derives from the schedule id and the scheduled time (not the time it ran: days later).
        run_id = f"{schedule_id}-{night:%Y-%m-%dT%H:%M:%SZ}"
        assert action.action.workflow_id == run_id
        result = await dev_env.client.get_workflow_handle(run_id, result_type=BulkImportResult).result()
        assert (result.status, result.items, result.batches) == ("COMPLETED", n, (n + 1) // 2), run_id
        # Its own night's file: every item sent carries that night's date.
        (chunks,) = (tmp_path / "imports").glob(f"{schedule_id}-{night:%Y-%m-%d}T*/chunks")  # the run's folder
        uids = {
            item["uid"] for chunk in chunks.glob("chunk-*.json") for item in json.loads(chunk.read_text())["requests"]
        }
        assert len(uids) == n and all(uid.startswith(f"{night:%Y-%m-%d}-") for uid in uids)
        # Children and Idempotency-Keys derive from that id: one job per key.
        keys = {idempotency_key(f"{run_id}-batch-{i:05d}") for i in range(result.batches)}
        assert keys <= set(sim.batch.jobs_created) and all(sim.batch.jobs_created[k] == 1 for k in keys)
    assert described.info.num_actions_skipped_overlap == 0

    # Overlap skip: a trigger while the triggered run still runs starts nothing and is counted as skipped.
    sim.batch_defaults.update(duration=4)
    await handle.trigger()
    for _ in range(100):
        if (await handle.describe()).info.running_actions:
            break
        await asyncio.sleep(0.1)
    await handle.trigger()
    described = await handle.describe()
    assert described.info.num_actions_skipped_overlap == 1
    assert len(described.info.running_actions) == 1
    described = await until_idle(handle, 4)
    assert len(described.info.recent_actions) == 4 and described.info.num_actions_skipped_overlap == 1
    triggered = described.info.recent_actions[-1]
    result = await dev_env.client.get_workflow_handle(
        triggered.action.workflow_id, result_type=BulkImportResult
    ).result()
    assert triggered.action.workflow_id.startswith(f"{schedule_id}-") and result.items == 4

    # Run again: the same schedule updated (new time), still paused; a cron Temporal refuses is exit 2.
    again = cli_schedule(worker, tmp_path, schedule_id, "--cron", "30 3 * * *", "--kind", "users", "--source", "x")
    assert again.returncode == 0 and f"schedule {schedule_id} updated (it stays paused)" in again.stdout
    described = await handle.describe()
    assert {(t.hour, t.minute) for t in described.info.next_action_times} == {(3, 30)}
    assert described.schedule.state.paused
    bad = cli_schedule(worker, tmp_path, "other", "--cron", "every night", "--kind", "users", "--source", "x")
    assert bad.returncode == 2 and "Temporal refused the schedule" in bad.stderr and "Traceback" not in bad.stderr
    await handle.delete()


def cli_schedule(worker, cwd: Path, schedule_id: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "schedule", "bulk-import", "--id", schedule_id, *argv],
        env={**os.environ, **worker.env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
