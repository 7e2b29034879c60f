"""A full run of a real worker process, seen from outside: Prometheus metrics, the health endpoint,
JSON logs with workflow ids on every activity line, and no API key or signed-URL query anywhere
(logs and workflow histories are grepped)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request

import pytest

from activities.metrics import endpoint_of
from helpers import API_KEY, free_port
from workflows.batch_job_input import BatchImportResult, batch_workflow_id
from workflows.data_export_sync import DataExportSyncResult
from workflows.segment_export import SegmentExportResult, segment_export_workflow_id

pytestmark = pytest.mark.e2e


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError) as e:
        return 0, str(e)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(m.group(3)), True
    assert found, f"no sample of {name} with {labels}"
    return total


def test_endpoint_labels_carry_no_ids():
    assert endpoint_of("/v2/events/batch/AbC123=/errors") == "/v2/events/batch/{id}/errors"
    assert endpoint_of("/v2/users/batch") == "/v2/users/batch"
    assert endpoint_of("/operations/v1/op-1a2b?x=1") == "/operations/v1/{id}"
    assert endpoint_of("/search/v1/exports/exp-9/results") == "/search/v1/exports/{id}/results"
    assert endpoint_of("/api/v1/export/list") == "/api/v1/export/list"


async def test_a_full_run_is_observable_and_leaks_no_secret(dev_env, sim, worker_factory, tmp_path):
    metrics_port, health_port = free_port(), free_port()
    worker = worker_factory(
        FULLSTORY_METRICS_PORT=str(metrics_port),
        FULLSTORY_HEALTH_PORT=str(health_port),
        FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE="600",
        LOG_LEVEL="DEBUG",
    ).start()
    health = f"http://127.0.0.1:{health_port}"
    assert http_get(f"{health}/healthz") == (200, "ok\n")
    assert http_get(f"{health}/readyz") == (200, "ready\n")
    assert http_get(f"{health}/nope")[0] == 404

    client, tq = dev_env.client, worker_factory.task_queue
    job_id = sim.add_batch_job(
        kind="events", duration=2, imports=40, errors=250, page_size=100, retry_after_while_processing=1
    )
    op_id = sim.add_operation(duration=1, size=3 << 20, url_ttl=300, results_shape="downloadUrl")
    sim.legacy_burst, sim.legacy_per_minute = 10, 600
    sim.add_bundles(3, size=1 << 20, start=1_700_000_000, span=3600)
    dest = tmp_path / "out"
    batch = await client.start_workflow(
        "BatchImportWorkflow",
        {"kind": "events", "job_id": job_id, "destination": str(dest)},
        id=batch_workflow_id("events", job_id),
        task_queue=tq,
        result_type=BatchImportResult,
    )
    export = await client.start_workflow(
        "SegmentExportWorkflow",
        {"operation_id": op_id, "destination": str(dest)},
        id=segment_export_workflow_id(op_id),
        task_queue=tq,
        result_type=SegmentExportResult,
    )
    sync = await client.start_workflow(
        "DataExportSyncWorkflow",
        {"start": 1_600_000_000, "stop": 1_700_000_000 + 3 * 3600, "destination": str(dest / "bundles")},
        id=f"sync-{tq}",
        task_queue=tq,
        result_type=DataExportSyncResult,
    )
    b, e, s = await asyncio.wait_for(asyncio.gather(batch.result(), export.result(), sync.result()), 120)
    assert (b.records_collected, e.sha256, s.bundles) == (250, sim.file_sha256(op_id), 3)

    # Metrics: ours (by endpoint and status, ids out of the labels) next to the SDK's own.
    status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    assert metric(text, "fullstory_http_requests", endpoint="/v2/events/batch/{id}", status="200") >= 2
    assert metric(text, "fullstory_http_requests", endpoint="/v2/events/batch/{id}/errors", status="200") == 3
    assert metric(text, "fullstory_http_requests", endpoint="/api/v1/export/get", status="200") == 3
    assert metric(text, "fullstory_retry_after_seconds", endpoint="/v2/events/batch/{id}") >= 1
    assert metric(text, "fullstory_records_collected", kind="events", which="errors") == 250
    assert metric(text, "fullstory_bytes_downloaded", source="operation") == 3 << 20
    assert metric(text, "fullstory_bytes_downloaded", source="legacy_bundle") == 3 << 20
    assert metric(text, "temporal_workflow_completed", workflow_type="BatchImportWorkflow") >= 1
    assert metric(text, "temporal_activity_execution_latency_count", activity_type="download_to_destination") >= 1
    assert job_id not in text and op_id not in text

    # SIGTERM: a graceful stop, exit 0; then nothing answers on the health port.
    worker.stop()
    assert worker.proc.returncode == 0
    assert http_get(f"{health}/healthz")[0] == 0

    # Logs: JSON, one object a line, activity lines carry their workflow and activity; no secret anywhere.
    log = worker.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    plain = [line for line in log.splitlines() if not line.startswith("{")]
    our_prints = ("metrics on ", "workflows may read and write only in: ", "worker ready ")
    assert all(line.startswith(our_prints) for line in plain), plain
    assert len(records) > 10 and {"debug", "info"} <= {r["level"] for r in records}
    activity_lines = [r for r in records if r.get("logger") == "temporalio.activity"]
    assert activity_lines and all(r.get("workflow_id") and r.get("activity_type") for r in activity_lines)
    signature = re.compile(r"Signature=|Expires=\d")
    histories = [json.dumps((await h.fetch_history()).to_json_dict()) for h in (batch, export, sync)]
    for where, text in [
        ("worker log", log),
        *zip(("batch history", "export history", "sync history"), histories, strict=True),
    ]:
        assert API_KEY not in text, f"API key in the {where}"
        assert f"Basic {API_KEY}" not in text
        assert not signature.search(text), f"signed-URL query in the {where}"
