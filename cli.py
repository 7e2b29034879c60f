"""The `fullstory-jobs` command: run the worker, start workflows, read their progress and results.

The one entry point (`python worker.py` is the same entry; `python cli.py` too).

    fullstory-jobs worker                                 run the worker (the default)
    fullstory-jobs demo                                   one events + one users import, results printed
    fullstory-jobs start batch-import --kind events --job-id X
    fullstory-jobs start segment-export --segment-id S --time-range '{"start": ..., "end": ...}'
    fullstory-jobs start operation --operation-id OP
    fullstory-jobs start data-export-sync --start 1700000000 --stop 1700086400
    fullstory-jobs status WORKFLOW_ID                     the `progress` query and pending activities, as JSON
    fullstory-jobs result WORKFLOW_ID                     wait for the result, print it as JSON
    fullstory-jobs pause WORKFLOW_ID                      a segment export sync: finish windows in flight, start none
    fullstory-jobs resume WORKFLOW_ID                     ...and carry on from its cursor
    fullstory-jobs schedule bulk-import --id nightly-users --cron '0 2 * * *' --kind users \
        --source '/crm/users-{date}.ndjson.gz'            create or update a Temporal Schedule (README: Nightly imports)

`start` takes one flag per input field (see `fullstory-jobs start KIND --help`)
or the whole input as JSON with `--input` (`@file.json` reads a file); flags
override `--input`. The input is validated here before anything is started.
Temporal is found as the worker finds it (TEMPORAL_ADDRESS, profile TOML), or
else at the embedded dev server a local `make run` recorded in ./.temporal/.
Exit codes: 0 done, 1 the workflow failed, 2 bad arguments or settings (or no Temporal to talk to).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import re
import sys
import types
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionDescription,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.locations import Locations
from infra.logging_setup import add_log_level_flag, configure_logging
from infra.settings import Settings, SettingsError, load_settings
from infra.temporal_connection import (
    HINT_CONFIGURED,
    HINT_LOCAL,
    TemporalTarget,
    connect,
    for_cli,
    load_temporal_target,
    ui_link,
)
from infra.tracing import setup_tracing
from infra.worker_host import exit_now, serve, services
from vocabulary.contract import PositiveDuration, describe_validation_error
from vocabulary.placeholders import fields_with_placeholders, fill_placeholders, unscheduled_message
from wiring import allowed_locations, run_workers
from workflows.batch_job_input import BatchImportInput
from workflows.registry import BY_COMMAND, Job, start_texts


class UsageError(Exception):
    """Bad arguments: one line on stderr, exit 2."""


def _is_simple(annotation: Any) -> bool:
    """str/int/float/bool/timedelta/datetime/Literal (optionally | None): a plain flag value; else JSON."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return len(args) == 1 and _is_simple(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return True
    return annotation in (str, int, float, bool, timedelta, datetime)


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], hidden: frozenset[str]) -> None:
    """One --flag per input field; help from the field's description; complex fields take JSON (or @file)."""
    for name, info in model.model_fields.items():
        if name in hidden:
            continue
        flag = "--" + name.replace("_", "-")
        text = (info.description or "").replace("%", "%%")
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else None
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif _is_simple(info.annotation):
            parser.add_argument(
                flag, dest=name, default=None, choices=choices, metavar=None if choices else "VALUE", help=text
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                metavar="JSON",
                help=(text + " " if text else "") + "(JSON, or @file.json)",
            )


BARE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _load_json(value: str, what: str) -> Any:
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as e:
            raise UsageError(f"{what}: cannot read {value[1:]}: {e.strerror}") from None
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def build_input(job: Job, args: argparse.Namespace) -> BaseModel:
    return validate_input(job, input_data(job, args))


def input_data(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """The input as JSON from --input and the flags (flags override), not yet validated."""
    data: dict[str, Any] = {}
    if args.input:
        data = _load_json(args.input, "--input")
        if not isinstance(data, dict):
            raise UsageError("--input: must be a JSON object")
    for name, info in job.input.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if not _is_simple(info.annotation) and not BARE_WORD.fullmatch(value):
            value = _load_json(value, "--" + name.replace("_", "-"))
        data[name] = value  # a bare word stays a string: `--load duckdb` (the model reads the short form)
    return data


def validate_input(job: Job, data: dict[str, Any]) -> BaseModel:
    try:
        return job.input.model_validate(data)
    except ValidationError as e:
        raise UsageError(describe_validation_error(job.input, e)) from None


async def connect_client(target: TemporalTarget) -> Client:
    """A client for `target`; when nothing answers, a one-line SettingsError saying what to do (exit 2)."""
    configured = not load_temporal_target().embedded  # else target is what a local `make run` recorded
    return await connect(target, hint=HINT_CONFIGURED if configured else HINT_LOCAL)


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    print(json.dumps(value, indent=2, default=str), flush=True)


def _failure_text(err: BaseException) -> str:
    """The innermost cause's message: what actually went wrong, in one line."""
    texts = []
    while err is not None:
        message = getattr(err, "message", None) or str(err)
        if message:
            texts.append(message.splitlines()[0])
        err = err.__cause__
    return texts[-1] if texts else "unknown failure"


async def start(
    client: Client, target: TemporalTarget, settings: Settings, workflow: str, model: BaseModel, workflow_id: str
) -> WorkflowHandle:
    """Start (or join, while it runs) `workflow` with the UI's static texts; print its id and UI link."""
    summary, details = start_texts(workflow, model)
    handle = await client.start_workflow(
        workflow,
        model,
        id=workflow_id,
        task_queue=settings.fullstory_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=summary,
        static_details=details,
    )
    print(f"workflow id: {workflow_id}", flush=True)
    if link := ui_link(target, workflow_id, settings.temporal_ui_url):
        print(f"UI: {link}", flush=True)
    return handle


# Temporal refuses a payload over about 2 MB ("Blob data size exceeds limit"): a bigger inline input is staged.
MAX_INLINE_INPUT = 1_500_000


def stage_big_requests(job: Job, model: BaseModel, settings: Settings) -> BaseModel:
    """A batch import whose inline `requests` would exceed Temporal's payload limit: write them to a file the
    workers can read (the object-store `destination`, else FULLSTORY_DATA_DIR/uploads/) and pass its URL."""
    if not isinstance(model, BatchImportInput) or model.requests is None:
        return model
    body = json.dumps({"requests": model.requests, "shared": model.shared}, separators=(",", ":")).encode()
    if len(body) <= MAX_INLINE_INPUT:
        return model
    name = f"requests-{hashlib.sha256(body).hexdigest()[:16]}.json"
    mb = f"{len(body) / 1e6:.1f} MB"
    dest = model.destination or ""
    remote = dest if "://" in dest and not dest.startswith("file://") else None
    try:
        locations = Locations(settings.fullstory_data_dir, settings.fullstory_allowed_locations)
        url = locations.destination(remote).write_atomic(f"uploads/{name}", body)
    except Exception as e:  # not writable here, no credentials, ...
        raise UsageError(
            f"--requests is {mb}, over Temporal's ~2 MB payload limit, and it could not be staged ({e}): "
            "put the items where the workers can read them and use --requests-url, "
            "or `fullstory-jobs start bulk-import --source FILE`"
        ) from None
    print(f"--requests is {mb}, over Temporal's ~2 MB payload limit: staged at {url}", file=sys.stderr, flush=True)
    data = model.model_dump(exclude={"requests", "shared"}, exclude_none=True)
    return BatchImportInput.model_validate({**data, "requests_url": url})


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    job = BY_COMMAND[args.start_what]
    data = input_data(job, args)
    if placeholders := fields_with_placeholders(data):  # the workflow would refuse it: say so before starting
        raise UsageError(unscheduled_message(placeholders) + f"; or `fullstory-jobs schedule {job.command}`")
    model = stage_big_requests(job, validate_input(job, data), settings)
    target = for_cli()
    client = await connect_client(target)
    workflow_id = args.id or job.new_workflow_id(model)
    handle = await start(client, target, settings, job.name, model, workflow_id)
    if not args.wait:
        print(f"follow it: fullstory-jobs status {workflow_id}; fullstory-jobs result {workflow_id}", flush=True)
        return 0
    return await _print_result(client, workflow_id, handle.result_run_id)


# --- schedule: a Temporal Schedule that starts a workflow on a cron or an interval ---------------------

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer-one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer-all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel-other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate-other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow-all": ScheduleOverlapPolicy.ALLOW_ALL,
}
DEFAULT_CATCHUP_WINDOW = "P1D"
_DURATION: TypeAdapter[timedelta] = TypeAdapter(PositiveDuration)


def _duration(value: str, flag: str) -> timedelta:
    try:
        return _DURATION.validate_python(value)
    except ValidationError:
        raise UsageError(f"{flag}: {value!r} is not a duration: ISO 8601 (PT1H, P1D) or seconds, above zero") from None


def schedule_spec(args: argparse.Namespace) -> ScheduleSpec:
    """--cron or --every (exactly one), in UTC."""
    if (args.cron is None) == (args.every is None):
        raise UsageError("give exactly one of --cron EXPR or --every DURATION")
    if args.cron is not None:
        if not args.cron.strip():
            raise UsageError("--cron: empty expression")
        return ScheduleSpec(cron_expressions=[args.cron])  # Temporal checks the expression (exit 2 if bad)
    return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=_duration(args.every, "--every"))])


def schedule_policy(args: argparse.Namespace) -> SchedulePolicy:
    catchup = _duration(args.catchup_window, "--catchup-window")
    if catchup < timedelta(seconds=10):
        raise UsageError("--catchup-window: Temporal's minimum is 10 seconds")
    return SchedulePolicy(overlap=OVERLAP[args.overlap], catchup_window=catchup, pause_on_failure=args.pause_on_failure)


def schedule_input(job: Job, args: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], BaseModel]:
    """(the action's input as JSON, the model its texts come from), validated here before anything is created.

    A placeholder is no error: the input is validated with `{date}`/`{datetime}` filled as for a run now
    (so `--start '{date}T00:00:00Z'` must still parse), and the schedule keeps each such field as given."""
    data = input_data(job, args)
    model = stage_big_requests(job, validate_input(job, fill_placeholders(data, datetime.now(UTC))), settings)
    action_input = model.model_dump(mode="json", exclude_unset=True)
    for name in fields_with_placeholders(data):
        action_input[name] = data[name]
    try:
        return action_input, job.input.model_validate(action_input)  # the UI's texts show the placeholders
    except ValidationError:
        return action_input, model


def _describe_spec(args: argparse.Namespace) -> str:
    return f"cron {args.cron!r} (UTC)" if args.cron is not None else f"every {args.every}"


async def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    """Create the schedule `--id`, or update it (keeping whether it is paused); print how to manage it."""
    job = BY_COMMAND[args.schedule_what]
    spec, policy = schedule_spec(args), schedule_policy(args)
    action_input, texts_model = schedule_input(job, args, settings)
    summary, details = start_texts(job.name, texts_model)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            job.name,
            action_input,
            id=args.id,  # each run's id: this + "-" + its scheduled time (Temporal appends it)
            task_queue=settings.fullstory_task_queue,
            static_summary=summary,
            static_details=details,
        ),
        spec=spec,
        policy=policy,
        state=ScheduleState(paused=args.paused, note=f"fullstory-jobs schedule {job.command}"),
    )
    target = for_cli()
    client = await connect_client(target)
    try:
        try:
            await client.create_schedule(args.id, schedule)
            verb = "created" + (" paused" if args.paused else "")
        except ScheduleAlreadyRunningError:

            def keep_state(current: ScheduleUpdateInput) -> ScheduleUpdate:
                schedule.state = current.description.schedule.state
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(args.id).update(keep_state)
            verb = "updated" + (" (it stays paused)" if schedule.state.paused else "")
    except RPCError as e:
        if e.status == RPCStatusCode.INVALID_ARGUMENT:  # a bad cron expression, say
            raise UsageError(f"Temporal refused the schedule: {e.message.splitlines()[0]}") from None
        raise
    description = await client.get_schedule_handle(args.id).describe()
    nxt = ", ".join(t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in description.info.next_action_times[:3])
    print(f"schedule {args.id} {verb}: {job.name} {_describe_spec(args)}", flush=True)
    print(
        f"policies: overlap {args.overlap}, catch-up window {args.catchup_window}, "
        f"{'pause' if policy.pause_on_failure else 'do not pause'} on failure",
        flush=True,
    )
    print(f"each run's workflow id: {args.id}-<scheduled time>, e.g. {args.id}-2026-12-03T02:00:00Z", flush=True)
    if nxt:
        print(f"next runs{' (once unpaused)' if description.schedule.state.paused else ''}: {nxt}", flush=True)
    conn = f" --address {target.address}" + (
        f" --namespace {target.namespace}" if target.namespace != "default" else ""
    )
    sid = f"--schedule-id {args.id}"
    print("manage it with Temporal's own commands:", flush=True)
    for line in (
        f"temporal schedule list{conn}",
        f"temporal schedule describe{conn} {sid}",
        f"temporal schedule toggle{conn} {sid} --pause --reason '...'   # --unpause to resume",
        f"temporal schedule trigger{conn} {sid}   # one run now",
        f"temporal schedule backfill{conn} {sid} --overlap-policy BufferAll "
        "--start-time 2026-12-01T00:00:00Z --end-time 2026-12-04T00:00:00Z   # the runs due in that range, in turn",
        f"temporal schedule delete{conn} {sid}",
    ):
        print(f"  {line}", flush=True)
    return 0


async def cmd_demo(settings: Settings) -> int:
    """One events and one users import against the simulator (or Fullstory), results printed."""
    # Two dev servers must never share .temporal/temporal.db: with a `make run` running here, demo uses its
    # server, and its worker, which polls the same task queue: demo then only starts the imports and waits
    # for their results (a second worker with its own simulator would split one job's calls between two
    # simulators). With no worker polling that server, demo runs its own; with no server, it starts one.
    # Nor does demo serve metrics: the port (FULLSTORY_METRICS_PORT) is the running worker's.
    settings = settings.model_copy(update={"fullstory_metrics_port": None})
    async with services(settings, reuse_running_server=True) as rt, run_workers(rt):
        started = []
        for kind, n in (("events", 25), ("users", 12)):
            requests = [
                (
                    {"name": "Demo Event", "user": {"uid": f"demo-{i}"}}
                    if kind == "events"
                    else {"uid": f"demo-{i}", "display_name": f"Demo User {i}"}
                )
                for i in range(n)
            ]
            model = BatchImportInput(kind=kind, requests=requests, collect_imports=True)
            job = BY_COMMAND["batch-import"]
            workflow_id = job.new_workflow_id(model)
            handle = await start(rt.client, rt.target, rt.settings, job.name, model, workflow_id)
            started.append((workflow_id, handle.result_run_id))
        results = [await _print_result(rt.client, workflow_id, run_id) for workflow_id, run_id in started]
    return max(results)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(for_cli())
    handle = client.get_workflow_handle(args.workflow_id)
    try:
        description = await handle.describe()
    except RPCError as e:
        raise UsageError(f"no workflow {args.workflow_id!r}: {e.message}") from None
    out: dict[str, Any] = {
        "workflow_id": args.workflow_id,
        "type": description.workflow_type,
        "status": description.status.name if description.status else None,
        "pending_activities": pending_activities(description),
    }
    try:
        out["progress"] = await asyncio.wait_for(handle.query("progress"), 10)
    except Exception as e:  # no worker polling, or a workflow without the query
        out["progress"] = None
        out["progress_unavailable"] = _failure_text(e)
    print_json(out)
    return 0


async def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    """`pause` / `resume`: the workflow's Update of that name; prints its answer (the progress) as JSON."""
    client = await connect_client(for_cli())
    handle = client.get_workflow_handle(args.workflow_id)
    try:
        answer = await asyncio.wait_for(handle.execute_update(args.command), 30)
    except RPCError as e:
        raise UsageError(f"no running workflow {args.workflow_id!r}: {e.message}") from None
    except TimeoutError:
        raise UsageError(f"{args.workflow_id}: no worker answered the {args.command} within 30 s") from None
    except WorkflowUpdateFailedError as e:
        raise UsageError(f"{args.workflow_id} cannot {args.command}: {_failure_text(e)}") from None
    print_json(answer)
    return 0


def _time(message: Any, field: str) -> str | None:
    """A protobuf Timestamp field as ISO 8601 (UTC), None when unset."""
    return getattr(message, field).ToDatetime(tzinfo=UTC).isoformat() if message.HasField(field) else None


def pending_activities(description: WorkflowExecutionDescription) -> list[dict[str, Any]]:
    """What the run waits on, from the server: each pending activity's attempt, state, last failure (first
    line: e.g. "batch job X is still PROCESSING (check 3); next check in 8s"), when its current attempt was
    scheduled, when the next one is (while it backs off between attempts), and its last heartbeat."""
    out = []
    for pa in description.raw_description.pending_activities:
        failure = pa.last_failure.message.strip() if pa.HasField("last_failure") else ""
        out.append(
            {
                "activity_id": pa.activity_id,
                "activity_type": pa.activity_type.name,
                "attempt": pa.attempt,
                "state": PendingActivityState.Name(pa.state).removeprefix("PENDING_ACTIVITY_STATE_"),
                "last_failure": failure.splitlines()[0] if failure else None,
                "scheduled_time": _time(pa, "scheduled_time"),
                "next_attempt_time": _time(pa, "next_attempt_schedule_time"),
                "last_heartbeat_time": _time(pa, "last_heartbeat_time"),
            }
        )
    return out


async def cmd_result(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(for_cli())
    return await _print_result(client, args.workflow_id, None, args.timeout)


async def _print_result(client: Client, workflow_id: str, run_id: str | None, timeout: float | None = None) -> int:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        result = await asyncio.wait_for(handle.result(), timeout)
    except TimeoutError:
        description = await handle.describe()
        print(
            f"fullstory-jobs: {workflow_id} is still {description.status.name if description.status else 'running'}"
            f" after {timeout:g}s",
            file=sys.stderr,
        )
        return 3
    except WorkflowFailureError as e:
        print(f"fullstory-jobs: {workflow_id} failed: {_failure_text(e)}", file=sys.stderr)
        return 1
    except RPCError as e:
        raise UsageError(f"no workflow {workflow_id!r}: {e.message}") from None
    print_json(result)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fullstory-jobs",
        description=__doc__.split("\n\n")[0],
        epilog="Settings come from environment variables: see README.md, Settings.",
    )
    add_log_level_flag(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "worker",
        help="run the worker (embedded Temporal dev server if no TEMPORAL_ADDRESS, simulator if no FULLSTORY_API_KEY)",
    )
    commands.add_parser("demo", help="start one events and one users import and print their results")
    start = commands.add_parser("start", help="start a workflow; prints its id and UI link")
    kinds = start.add_subparsers(dest="start_what", metavar="WORKFLOW", required=True)
    for job in BY_COMMAND.values():
        sub = kinds.add_parser(job.command, help=f"start a {job.name}", description=(job.input.__doc__ or "").strip())
        sub.add_argument("--input", metavar="JSON", help="the whole input as JSON (or @file.json); flags override it")
        sub.add_argument("--id", help="workflow id (default: derived from the job, so a second start joins the first)")
        sub.add_argument("--wait", action="store_true", help="wait for the result and print it")
        add_model_flags(sub, job.input, job.hidden_fields)
    schedule = commands.add_parser(
        "schedule",
        help="create or update a Temporal Schedule that starts a workflow on a cron or an interval",
        description="Create (or update) the Temporal Schedule --id: it starts WORKFLOW on --cron (UTC) or --every, "
        "each run with the workflow id ID-<scheduled time>. String inputs may hold {date} (2026-12-03) and "
        "{datetime} (2026-12-03T02-00-00Z), filled from each run's scheduled time (UTC). List, pause, trigger, "
        "backfill and delete it with `temporal schedule ...` (README: Nightly imports).",
    )
    scheduled = schedule.add_subparsers(dest="schedule_what", metavar="WORKFLOW", required=True)
    for job in BY_COMMAND.values():
        sub = scheduled.add_parser(
            job.command, help=f"schedule a {job.name}", description=(job.input.__doc__ or "").strip()
        )
        sub.add_argument("--id", required=True, help="the schedule id; each run's workflow id is ID-<scheduled time>")
        when = sub.add_argument_group("when (exactly one)")
        when.add_argument("--cron", metavar="EXPR", help="cron expression, in UTC: '0 2 * * *' is 02:00 UTC daily")
        when.add_argument("--every", metavar="DURATION", help="an interval, ISO 8601 (PT6H, P1D) or seconds")
        sub.add_argument(
            "--overlap",
            choices=list(OVERLAP),
            default="skip",
            help="a run due while the last one still runs (default: skip: it does not start, and is counted)",
        )
        sub.add_argument(
            "--catchup-window",
            metavar="DURATION",
            default=DEFAULT_CATCHUP_WINDOW,
            help="after an outage, runs missed by less than this still start (default: P1D, one day)",
        )
        sub.add_argument(
            "--pause-on-failure",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="pause the schedule when a run fails (default: on; resume with `temporal schedule toggle --unpause`)",
        )
        sub.add_argument("--paused", action="store_true", help="create it paused (an update keeps its current state)")
        sub.add_argument("--input", metavar="JSON", help="the whole input as JSON (or @file.json); flags override it")
        add_model_flags(sub, job.input, job.hidden_fields)
    status = commands.add_parser(
        "status",
        help="a workflow's status, progress (the `progress` query) and pending "
        "activities (attempt, last failure, next attempt), as JSON",
    )
    status.add_argument("workflow_id")
    for name, what in (
        ("pause", "pause a segment export sync: it finishes the windows in flight and starts no new one"),
        ("resume", "resume a paused segment export sync from its cursor"),
    ):
        commands.add_parser(name, help=what).add_argument("workflow_id")
    result = commands.add_parser("result", help="wait for a workflow's result and print it as JSON")
    result.add_argument("workflow_id")
    result.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    command = args.command or "worker"
    configure_logging(args.log_level)
    if command in ("start", "schedule", "status", "result", "pause", "resume"):
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))  # stdout is the answer
    try:
        settings = load_settings()
        setup_tracing()  # off unless OTEL_TRACES_EXPORTER asks (infra/tracing.py)
        if command == "worker":
            asyncio.run(serve(settings, run_workers, allowed_locations(settings).describe()))
            return 0
        if command == "demo":
            return asyncio.run(cmd_demo(settings))
        handler = {
            "start": cmd_start,
            "schedule": cmd_schedule,
            "status": cmd_status,
            "result": cmd_result,
            "pause": cmd_update,
            "resume": cmd_update,
        }[command]
        return asyncio.run(handler(args, settings))
    except (SettingsError, UsageError) as e:
        print(f"fullstory-jobs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RPCError as e:  # never a traceback: Temporal's answer in one line
        print(f"fullstory-jobs: Temporal refused: {e.message.splitlines()[0] if e.message else e}", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script: `main()`, then a flush and `os._exit` (see infra.worker_host.exit_now)."""
    try:
        rc = main()
    except SystemExit as e:  # argparse: 0 after --help, 2 after a usage error
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    exit_now(rc)


if __name__ == "__main__":
    entry()
