"""The shared download core against the simulator's storage host over a real socket (no Temporal needed)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
import tracemalloc
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.download import DownloadActivities, filename_from_disposition, sanitize_filename
from activities.fullstory_client import FullstoryClient
from activities.gzip_check import GzipChecker, GzipCorrupt
from conftest import API_KEY
from workflows.activity_types import DownloadParams

STORAGE = "/_storage/{export_id}/{filename}"


@pytest.fixture
async def downloads(sim, tmp_path):
    client = FullstoryClient(API_KEY, sim.base_url, sim.base_url, timeout=10)
    yield DownloadActivities(client, str(tmp_path))
    await client.aclose()


def params(op_id: str, **kw) -> DownloadParams:
    return DownloadParams.model_validate({"source": {"kind": "operation", "operation_id": op_id}, **kw})


def storage_requests(sim):
    return [r for r in sim.requests if r.route == STORAGE]


async def test_full_download_matches_the_simulator(sim, downloads, tmp_path):
    op = sim.add_operation(size=3 << 20, filename="my export.ndjson.gz")
    result = await downloads.download(params(op), tmp_path / "x.part", tmp_path, 0)
    data = Path(result.location).read_bytes()
    assert result.bytes == len(data) == 3 << 20
    assert result.sha256 == hashlib.sha256(data).hexdigest() == sim.file_sha256(op)
    assert result.filename == "my_export.ndjson.gz" and result.content_type == "application/gzip"
    assert gzip.decompress(data).count(b"\n") > 1000
    assert not (tmp_path / "x.part").exists()
    assert all("authorization" not in r.headers for r in storage_requests(sim))


async def test_resumes_a_kept_part_with_range(sim, downloads, tmp_path):
    op = sim.add_operation(size=4 << 20)
    first = await downloads.download(params(op, filename="a.gz"), tmp_path / "a.part", tmp_path, 0)
    whole = Path(first.location).read_bytes()
    part = tmp_path / "b.part"
    part.write_bytes(whole[: 3 << 20] + b"garbage past the heartbeat")  # a crash left more than was heartbeated
    sim.reset_stats()
    result = await downloads.download(params(op, filename="b.gz"), part, tmp_path, 3 << 20)
    assert result.sha256 == sim.file_sha256(op) and result.bytes == 4 << 20
    (req,) = storage_requests(sim)
    assert req.headers["range"] == f"bytes={3 << 20}-" and req.status == 206


async def test_without_range_support_it_restarts_cleanly(sim, downloads, tmp_path):
    op = sim.add_operation(size=2 << 20, range_support=False)
    part = tmp_path / "c.part"
    part.write_bytes(b"\x1f\x8b" + b"x" * 1000)  # a stale prefix that must not survive
    result = await downloads.download(params(op), part, tmp_path, 1002)
    assert result.sha256 == sim.file_sha256(op) and result.bytes == 2 << 20


async def test_connection_reset_mid_body_is_resumed_within_the_attempt(sim, downloads, tmp_path):
    op = sim.add_operation(size=4 << 20, reset_after_bytes=3 << 19, reset_count=2)  # resets at 1.5 MiB
    result = await downloads.download(params(op), tmp_path / "d.part", tmp_path, 0)
    assert result.sha256 == sim.file_sha256(op)
    ranges = [r.headers.get("range") for r in storage_requests(sim)]
    assert len(ranges) == 3 and ranges[0] is None and all(x and x.startswith("bytes=") for x in ranges[1:])


async def test_expired_url_is_refreshed_and_the_download_carries_on(sim, downloads, tmp_path):
    offset = {"s": 0.0}
    sim.clock = lambda: time.time() + offset["s"]
    op = sim.add_operation(size=3 << 20, url_ttl=60, reset_after_bytes=2 << 20)
    sim.storage_bytes_per_second = 8 << 20

    async def expire_once_the_download_runs():
        while not storage_requests(sim):
            await asyncio.sleep(0.005)
        offset["s"] = 600.0  # the URL dies mid-body; the reset makes the client reconnect with it

    expiry = asyncio.create_task(expire_once_the_download_runs())
    result = await downloads.download(params(op), tmp_path / "e.part", tmp_path, 0)
    await expiry
    assert result.sha256 == sim.file_sha256(op)
    statuses = [r.status for r in storage_requests(sim)]
    assert statuses[:2] == [200, 403] and statuses[-1] == 206, statuses
    assert sim.count(route="/search/v1/exports/{export_id}/results") == 2


async def test_truncated_gzip_is_never_stored(sim, downloads, tmp_path):
    op = sim.add_operation(size=2 << 20, truncate_gzip=True)
    with pytest.raises(ApplicationError) as info:
        await downloads.download(params(op, filename="t.gz"), tmp_path / "t.part", tmp_path, 0)
    assert info.value.type == "DownloadCorrupt" and not info.value.non_retryable
    assert not (tmp_path / "t.gz").exists() and not (tmp_path / "t.part").exists()
    # The retry (the simulator truncates once) stores it whole.
    result = await downloads.download(params(op, filename="t.gz"), tmp_path / "t.part", tmp_path, 0)
    assert result.sha256 == sim.file_sha256(op)


async def test_without_the_gzip_check_a_truncated_file_fails_on_length(sim, downloads, tmp_path):
    op = sim.add_operation(size=1 << 20, truncate_gzip=True, truncate_count=1)
    result = await downloads.download(params(op, verify_gzip=False), tmp_path / "n.part", tmp_path, 0)
    # The simulator cut the body short but declared the short length: without the check only the size is known.
    assert result.bytes <= 1 << 20


async def test_memory_stays_flat(sim, downloads, tmp_path):
    op = sim.add_operation(size=64 << 20)
    sim.file_sha256(op)
    tracemalloc.start()
    await downloads.download(params(op), tmp_path / "m.part", tmp_path, 0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak >> 20} MiB for a 64 MiB download"


async def test_standard_key_gets_a_clear_403_from_the_api(sim, tmp_path):
    sim.add_key("std-key-000", role="standard")
    op = sim.add_operation(size=1 << 20)
    client = FullstoryClient("std-key-000", sim.base_url, sim.base_url)
    try:
        with pytest.raises(ApplicationError) as info:
            await DownloadActivities(client, str(tmp_path)).download(params(op), tmp_path / "s.part", tmp_path, 0)
    finally:
        await client.aclose()
    assert info.value.type == "FullstoryForbidden" and info.value.non_retryable
    assert "Admin or Architect" in info.value.message


async def test_activity_heartbeats_bytes_and_resumes_from_them(sim, downloads, tmp_path):
    op = sim.add_operation(size=4 << 20)
    beats = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: beats.append(d[0] if d else None)
    result = await env.run(downloads.download_to_destination, params(op, destination=str(tmp_path / "dest")))
    assert result.sha256 == sim.file_sha256(op)
    done = [b["bytes_done"] for b in beats if b]
    assert done and done == sorted(done) and done[-1] == 4 << 20
    assert Path(result.location).parent == tmp_path / "dest"


@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd", "passwd"),
    ("/abs/x.gz", "x.gz"),
    ("a\\b.gz", "b.gz"),
    ("", "default.gz"),
    (None, "default.gz"),
    ("..", "default.gz"),
    (".hidden", "hidden"),
    ("na me;rm -rf.gz", "na_me_rm_-rf.gz"),
])
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw, "default.gz") == expected


@pytest.mark.parametrize("header,expected", [
    ('attachment; filename="DataExport.json.gz"', "DataExport.json.gz"),
    ("attachment; filename=plain.gz", "plain.gz"),
    ("attachment; filename*=UTF-8''na%C3%AFve.gz", "naïve.gz"),
    ("inline", None),
    (None, None),
])
def test_filename_from_content_disposition(header, expected):
    assert filename_from_disposition(header) == expected


def test_gzip_checker_accepts_multi_member_and_rejects_truncation():
    data = gzip.compress(b"a" * 100_000) + gzip.compress(b"b" * 100_000)
    checker = GzipChecker()
    for i in range(0, len(data), 1000):
        checker.feed(data[i:i + 1000])
    checker.finish()
    assert checker.members == 2
    cut = GzipChecker()
    cut.feed(data[:-10])
    with pytest.raises(GzipCorrupt):
        cut.finish()
    bad = GzipChecker()
    with pytest.raises(GzipCorrupt):
        bad.feed(b"\x1f\x8b\x08\x00" + b"\xff" * 100)
