"""Screenshots of the Temporal UI on a running batch import and a running segment export.

    .venv/bin/python deploy/ui_screenshots.py [--out bench/out] [--wait 6]

Not part of `make test` (it installs a browser and takes about a minute). It:
1. installs Debian's chromium with apt-get if it is missing (root; `apt-get update` first);
2. starts the bundled Temporal dev server with its UI, the Fullstory simulator and an in-process
   worker (the same `wiring.make_workers` as production), all on loopback;
3. starts a `BatchImportWorkflow` watching a 10-minute events import and a `SegmentExportWorkflow`
   adopting a 15-minute export operation (5 minutes in, so at 25%), with the static summary and
   details of `workflows.registry.start_texts` (what `fullstory-jobs start` sets), and lets them poll
   for a few seconds; the data converter drops stack traces of benign "not finished yet" failures
   (`infra.data_converter.DATA_CONVERTER`);
4. prints what the UI is fed (each workflow's current details and its pending activity's summary,
   read back through the API) and saves headless screenshots of each workflow's page (Timeline tab,
   where the activity summaries show), its Pending Activities tab and its User Metadata tab (where
   the current details show, one click away), and of the workflow list, to <out>/ui-*.png;
5. stops everything it started (the browser, then the workflows, worker, simulator and dev server).

Why not `chromium --headless --screenshot --virtual-time-budget=...`: that works for the workflow
list, but a running workflow's page long-polls its history, virtual time never advances while a
request is in flight, and chromium hangs until killed. So the browser (same flags otherwise) is
driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`, standard library only):
open the page, wait real seconds for the data to arrive, capture.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.fullstory_client import FullstoryClient  # noqa: E402
from infra.data_converter import DATA_CONVERTER  # noqa: E402
from infra.settings import Settings  # noqa: E402
from simulator import Simulator  # noqa: E402
from wiring import make_workers  # noqa: E402
from workflows.batch_job import batch_workflow_id  # noqa: E402
from workflows.registry import start_texts  # noqa: E402
from workflows.segment_export import segment_export_workflow_id  # noqa: E402

API_KEY = "ui-screenshots-key"
NAMESPACE = "default"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--disable-breakpad",
    "--disable-crash-reporter",
]


def chromium() -> str:
    """The chromium binary, installed from Debian's packages if missing."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.geteuid() != 0:
        sys.exit("chromium is missing and this is not root: apt-get install chromium, then run again")
    print("installing Debian's chromium (apt-get update; apt-get install chromium) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    # A font package too: without one, a minimal image renders every glyph as a box.
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless chromium driven over the DevTools protocol on fds 3 (commands in) and 4 (replies out)."""

    def __init__(self, binary: str, size: str) -> None:
        self.width, self.height = (int(v) for v in size.split(","))
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: the protocol's fixed fds 3 and 4
            a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile.name}",
                f"--window-size={size}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next_id = 0

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:  # events and other replies are skipped
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer {method} within {timeout:g}s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.proc.poll()}) during {method}")
            self._buf += chunk

    def screenshot(self, url: str, out: Path, settle: float, click: str | None = None) -> None:
        """Open `url`, wait `settle` real seconds, optionally click the tab or link labelled `click`, capture."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        shown = url
        try:
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
                session,
            )
            self.call("Page.enable", session=session)
            self.call("Page.navigate", {"url": url}, session)
            time.sleep(settle)  # real time: the UI fetches the workflow, its history and pending activities
            if click is not None:
                script = (
                    "(() => { const el = [...document.querySelectorAll('a, button, [role=tab]')]"
                    f".find(e => e.textContent.trim() === {json.dumps(click)});"
                    " if (!el) return null; el.click(); return true; })()"
                )
                if not self.call("Runtime.evaluate", {"expression": script, "returnByValue": True}, session)[
                    "result"
                ].get("value"):
                    raise RuntimeError(f"no {click!r} on {url}")
                time.sleep(min(settle, 3.0))
                shown = (
                    self.call("Runtime.evaluate", {"expression": "location.href", "returnByValue": True}, session)[
                        "result"
                    ]["value"]
                    + f"  (after a click on {click!r})"
                )
            png = self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
            out.write_bytes(base64.b64decode(png))
        finally:
            self.call("Target.closeTarget", {"targetId": target})
        print(f"  saved {out.relative_to(REPO) if out.is_relative_to(REPO) else out}  <- {shown}", flush=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.profile.cleanup()


async def ui_texts(client: Client, handle: WorkflowHandle) -> dict[str, object]:
    """What the UI shows for a workflow, read through the API: current details, pending activity summaries."""
    texts: dict[str, object] = {}
    try:
        meta = await handle.query("__temporal_workflow_metadata")
        texts["current_details"] = getattr(meta, "current_details", None) or (
            meta.get("currentDetails") if isinstance(meta, dict) else None
        )
    except Exception as e:  # noqa: BLE001 - a report, not a check
        texts["current_details"] = f"(query failed: {e})"
    desc = await handle.describe()
    pending = desc.raw_description.pending_activities
    summaries = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and event.user_metadata.HasField("summary"):
            summaries[str(event.event_id)] = (await client.data_converter.decode([event.user_metadata.summary]))[0]
    texts["pending_activities"] = [
        {
            "type": p.activity_type.name,
            "attempt": p.attempt,
            "state": p.state,
            "next_attempt": p.next_attempt_schedule_time.ToDatetime().isoformat()
            if p.HasField("next_attempt_schedule_time")
            else None,
            "last_failure": p.last_failure.message or None,
        }
        for p in pending
    ]
    texts["activity_summaries"] = list(summaries.values())
    texts["progress"] = await handle.query("progress")
    return texts


async def run(out_dir: Path, wait: float, size: str, settle: float) -> None:
    binary = chromium()
    out_dir.mkdir(parents=True, exist_ok=True)
    ui_port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            ui=True,
            ui_port=ui_port,
            namespace=NAMESPACE,
            # Benign "not finished yet" failures without a Python stack trace under them (infra/data_converter.py).
            data_converter=DATA_CONVERTER,
            dev_server_log_level="error",
        )
        stack.push_async_callback(env.shutdown)
        ui = f"http://127.0.0.1:{ui_port}"
        print(f"Temporal dev server up; UI {ui}", flush=True)

        sim = stack.enter_context(Simulator(api_key=API_KEY))
        job_id = sim.add_batch_job(kind="events", duration=600, errors=5)
        op_id = sim.add_operation(duration=900, size=1 << 20)
        # As if the export had been started 5 minutes ago: RUNNING at 25%, so the percent shows.
        sim.operations[op_id].created -= 300
        print(
            f"simulator {sim.base_url}: events job {job_id} (10 min), export operation {op_id} (15 min, 5 min in)",
            flush=True,
        )

        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ui-screenshots-data-")))
        settings = Settings(fullstory_data_dir=str(data_dir), fullstory_task_queue="fullstory")
        fullstory = FullstoryClient(API_KEY, sim.base_url, sim.base_url, timeout=10)
        stack.push_async_callback(fullstory.aclose)
        for w in make_workers(env.client, fullstory, settings):
            await stack.enter_async_context(w)

        starts: dict[str, tuple[str, dict[str, Any], str]] = {
            "batch-import": (
                "BatchImportWorkflow",
                {"kind": "events", "job_id": job_id, "collect_imports": True},
                batch_workflow_id("events", job_id),
            ),
            "segment-export": (
                "SegmentExportWorkflow",
                {"operation_id": op_id, "destination": str(data_dir / "exports")},
                segment_export_workflow_id(op_id),
            ),
        }
        handles = {}
        for name, (workflow_type, args, workflow_id) in starts.items():
            # The same static texts the CLI (`fullstory-jobs start ...`) gives: summary and details at start.
            summary, details = start_texts(workflow_type, args)
            print(f"{name}: static summary {summary!r}", flush=True)
            handles[name] = await env.client.start_workflow(
                workflow_type,
                args,
                id=workflow_id,
                task_queue=settings.fullstory_task_queue,
                static_summary=summary,
                static_details=details,
            )
        # Running handles end as cancelled/terminated when the script stops, not left forever in history.
        for h in handles.values():
            stack.push_async_callback(_terminate, h)
        print(
            f"started {', '.join(h.id for h in handles.values())}; waiting {wait:g}s for a few status checks",
            flush=True,
        )
        await asyncio.sleep(wait)

        browser = Browser(binary, size)
        stack.callback(browser.close)  # the first to stop: the browser, by its own Browser.close, else killed
        for name, handle in handles.items():
            texts = await ui_texts(env.client, handle)
            print(f"\n== {name}: {handle.id}", flush=True)
            for key, value in texts.items():
                print(f"  {key}: {value}", flush=True)
            run_id = (await handle.describe()).run_id
            base = f"{ui}/namespaces/{NAMESPACE}/workflows/{quote(handle.id, safe='')}"
            # in a thread: the servers and the worker keep running on this loop meanwhile
            await asyncio.to_thread(browser.screenshot, base, out_dir / f"ui-{name}.png", settle)
            await asyncio.to_thread(
                browser.screenshot,
                f"{base}/{run_id}/pending-activities",
                out_dir / f"ui-{name}-pending-activities.png",
                settle,
            )
            # Current details are not on the default (Timeline) tab: they sit under "User Metadata".
            await asyncio.to_thread(
                browser.screenshot, base, out_dir / f"ui-{name}-user-metadata.png", settle, "User Metadata"
            )
        await asyncio.to_thread(
            browser.screenshot, f"{ui}/namespaces/{NAMESPACE}/workflows", out_dir / "ui-workflows.png", settle
        )
        print("\nstopping the worker, the simulator and the dev server", flush=True)


async def _terminate(handle: WorkflowHandle) -> None:
    with contextlib.suppress(Exception):
        await handle.terminate("ui_screenshots.py finished")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="where the PNGs go")
    parser.add_argument("--wait", type=float, default=6.0, help="seconds of polling before the screenshots")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds a page gets to load before its shot")
    parser.add_argument("--window-size", default="1400,1000")
    args = parser.parse_args()
    asyncio.run(run(args.out.resolve(), args.wait, args.window_size, args.settle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
