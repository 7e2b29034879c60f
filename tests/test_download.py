"""The shared download: core (no Temporal) and activity, against the simulator on a real loopback socket.

Sources (operation, search export, legacy bundle, plain URL), resume (Range, no Range, part already whole,
part too long, heartbeat details), resets keeping received bytes, retry budgets, URL expiry (`expires`, 403
mid-body, 404), truncated gzip, the API error table, names (sanitised, Content-Disposition, collisions),
the gzip checkers, flat memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.download_sources as sources_module
import activities.download_stream as stream_module
from activities.download import DownloadActivities, Downloader, DownloadParams
from activities.download_sink import sanitize_filename
from activities.download_stream import filename_from_disposition
from activities.fullstory_client import FullstoryClient
from activities.gzip_check import GzipChecker, GzipCorrupt, ProcessGzipChecker, ThreadedGzipChecker
from activities.locations import safe_name
from helpers import API_KEY
from infra.settings import Settings
from wiring import activity_deps

STORAGE = "/_storage/{export_id}/{filename}"
RESULTS = "/search/v1/exports/{export_id}/results"
LEGACY_GET = "/api/v1/export/get"


@pytest.fixture
async def downloads(sim, tmp_path):
    client = FullstoryClient(API_KEY, sim.base_url, sim.base_url, timeout=10)
    yield Downloader(client)
    await client.aclose()


def op_params(op_id: str, **kw) -> DownloadParams:
    return DownloadParams.model_validate({"source": {"kind": "operation", "operation_id": op_id}, **kw})


def requests_to(sim, route: str):
    return [r for r in sim.requests if r.route == route]


def whole_file(sim, op_id: str) -> bytes:
    """The file as the storage host serves it, fetched outside the code under test."""
    headers = {"Authorization": f"Basic {API_KEY}"}
    url = httpx.get(f"{sim.base_url}/search/v1/exports/{sim.export_id(op_id)}/results", headers=headers).json()
    return httpx.get(url["location"], headers={"Accept-Encoding": "identity"}).content


async def test_search_export_source_stores_the_exact_file_without_sending_the_key(sim, downloads, tmp_path):
    op = sim.add_operation(size=3 << 20)
    params = DownloadParams.model_validate({"source": {"kind": "search_export", "export_id": sim.export_id(op)}})
    result = await downloads.download(params, tmp_path / "a.part", tmp_path)
    assert result.sha256 == sim.file_sha256(op) == hashlib.sha256(Path(result.location).read_bytes()).hexdigest()
    assert result.bytes == 3 << 20 and result.filename == "export.ndjson.gz"
    assert gzip.decompress(Path(result.location).read_bytes()).startswith(b"{")
    storage = requests_to(sim, STORAGE)
    assert storage and all("authorization" not in r.headers and r.status == 200 for r in storage)
    assert [p.name for p in tmp_path.iterdir()] == ["export.ndjson.gz"]  # nothing partial left


async def test_resume_asks_only_for_the_rest(sim, downloads, tmp_path):
    op = sim.add_operation(size=8 << 20)
    data = whole_file(sim, op)
    keep = 5 << 20
    (tmp_path / "r.part").write_bytes(data[:keep])
    served = sim.bytes_served(op)
    beats: list[int] = []
    result = await downloads.download(op_params(op), tmp_path / "r.part", tmp_path, keep, beats.append)
    assert result.sha256 == sim.file_sha256(op) and result.bytes == len(data)
    assert sim.bytes_served(op) - served == len(data) - keep < len(data) // 2
    assert requests_to(sim, STORAGE)[-1].headers["range"] == f"bytes={keep}-"
    assert beats[0] == keep and beats[-1] == len(data) and beats == sorted(beats)


async def test_a_part_that_is_already_whole_is_finished_without_downloading(sim, downloads, tmp_path):
    # The previous attempt wrote and heartbeated the last byte, then died before the rename.
    op = sim.add_operation(size=2 << 20)
    data = whole_file(sim, op)
    (tmp_path / "w.part").write_bytes(data)
    served = sim.bytes_served(op)
    result = await downloads.download(op_params(op), tmp_path / "w.part", tmp_path, len(data))
    assert result.sha256 == sim.file_sha256(op) and sim.bytes_served(op) == served
    assert requests_to(sim, STORAGE)[-1].status == 416


async def test_a_part_longer_than_the_file_starts_over(sim, downloads, tmp_path):
    op = sim.add_operation(size=1 << 20)
    (tmp_path / "l.part").write_bytes(b"\x1f\x8b" + b"z" * ((1 << 20) + 100))
    result = await downloads.download(op_params(op), tmp_path / "l.part", tmp_path, (1 << 20) + 102)
    assert result.sha256 == sim.file_sha256(op) and result.bytes == 1 << 20


async def test_a_reset_keeps_every_byte_received_before_it(sim, downloads, tmp_path):
    sim.storage_bytes_per_second = 16 << 20  # paced so the client has read what was sent when the RST lands
    op = sim.add_operation(size=4 << 20, reset_after_bytes=3 << 20)
    result = await downloads.download(op_params(op), tmp_path / "k.part", tmp_path)
    assert result.sha256 == sim.file_sha256(op)
    first, second = requests_to(sim, STORAGE)
    start = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert (2 << 20) <= start <= 3 << 20  # not rounded down to the last whole chunk
    assert sim.bytes_served(op) < 1.5 * (4 << 20)


async def test_resets_without_progress_end_the_attempt_with_a_retryable_error(sim, downloads, tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "RETRY_BACKOFF_SECONDS", 0.001)
    op = sim.add_operation(size=1 << 20)
    sim.fault(r"^/_storage/", kind="reset", after_bytes=0, count=100)
    with pytest.raises(ApplicationError) as info:
        await downloads.download(op_params(op), tmp_path / "z.part", tmp_path)
    assert info.value.type == "FullstoryUnavailable" and not info.value.non_retryable
    assert len(requests_to(sim, STORAGE)) == stream_module.MAX_TRANSIENT_RETRIES + 1
    assert "Signature" not in str(info.value) and "Expires" not in str(info.value)  # no signed query in errors


async def test_an_expires_in_the_past_gets_a_fresh_url_before_reconnecting(sim, downloads, tmp_path):
    sim.clock = lambda: time.time() - 3600  # storage still accepts it; our clock says it expired
    sim.storage_bytes_per_second = 16 << 20
    op = sim.add_operation(size=3 << 20, reset_after_bytes=2 << 20)
    result = await downloads.download(op_params(op), tmp_path / "x.part", tmp_path)
    assert result.sha256 == sim.file_sha256(op)
    assert sim.count(route=RESULTS) == 2  # the first URL was used once (fresh), then replaced for the reconnect
    assert [r.status for r in requests_to(sim, STORAGE)] == [200, 206]


async def test_a_404_from_storage_gets_a_fresh_url(sim, downloads, tmp_path):
    op = sim.add_operation(size=1 << 20)
    sim.fault(r"^/_storage/", status=404, count=1)
    result = await downloads.download(op_params(op), tmp_path / "f.part", tmp_path)
    assert result.sha256 == sim.file_sha256(op)
    assert sim.count(route=RESULTS) == 2 and [r.status for r in requests_to(sim, STORAGE)] == [404, 200]


async def test_a_url_refused_again_and_again_is_retryable_after_a_few_fresh_ones(sim, downloads, tmp_path):
    op = sim.add_operation(size=1 << 20)
    sim.fault(r"^/_storage/", status=403, count=50)
    with pytest.raises(ApplicationError) as info:
        await downloads.download(op_params(op), tmp_path / "u.part", tmp_path)
    assert info.value.type == "DownloadUrlRejected" and not info.value.non_retryable
    assert sim.count(route=RESULTS) == 1 + sources_module.MAX_URL_REFRESHES


async def test_a_plain_url_that_is_not_found_is_final_and_leaves_nothing(sim, downloads, tmp_path):
    url = f"{sim.base_url}/_storage/nope/x.gz?Signature=s"
    params = DownloadParams.model_validate({"source": {"kind": "url", "url": url}})
    with pytest.raises(ApplicationError) as info:
        await downloads.download(params, tmp_path / "p.part", tmp_path)
    assert info.value.non_retryable and "storage host" in info.value.message and "Signature" not in info.value.message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "key,role,status,type_,hint",
    [
        (API_KEY, "admin", 404, "FullstoryNotFound", "check the id"),
        ("std-key-000", "standard", 403, "FullstoryForbidden", "Admin or Architect"),
    ],
)
async def test_api_errors_are_final_with_the_table_hint(sim, tmp_path, key, role, status, type_, hint):
    sim.add_key(key, role=role)
    op = sim.add_operation(size=1 << 20) if status == 403 else "op-unknown"
    client = FullstoryClient(key, sim.base_url, sim.base_url)
    try:
        with pytest.raises(ApplicationError) as info:
            await Downloader(client).download(op_params(op), tmp_path / "e.part", tmp_path)
    finally:
        await client.aclose()
    assert info.value.type == type_ and info.value.non_retryable and hint in info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_a_legacy_bundle_is_fetched_with_the_key_under_the_callers_name(sim, downloads, tmp_path):
    (bundle,) = sim.add_bundles(1, size=2 << 20)
    params = DownloadParams.model_validate(
        {"source": {"kind": "legacy_bundle", "bundle_id": int(bundle)}, "filename": f"1-2-{bundle}.json.gz"}
    )
    result = await downloads.download(params, tmp_path / "b.part", tmp_path)
    assert result.sha256 == sim.bundle_sha256(bundle) and result.filename == f"1-2-{bundle}.json.gz"
    (get,) = requests_to(sim, LEGACY_GET)
    assert get.headers["authorization"] == f"Basic {API_KEY}" and get.query["id"] == bundle


async def test_a_rate_limited_legacy_download_is_retried_after_retry_after(sim, downloads, tmp_path):
    sim.legacy_burst = 1
    first, second = sim.add_bundles(2, size=1 << 20)

    def bundle(bundle_id: str) -> DownloadParams:
        return DownloadParams.model_validate({"source": {"kind": "legacy_bundle", "bundle_id": bundle_id}})

    await downloads.download(bundle(first), tmp_path / "1.part", tmp_path)
    with pytest.raises(ApplicationError) as info:
        await downloads.download(bundle(second), tmp_path / "2.part", tmp_path)
    assert info.value.type == "FullstoryRateLimited" and not info.value.non_retryable
    assert timedelta(seconds=1) <= info.value.next_retry_delay <= timedelta(seconds=31)
    assert sim.legacy_429s == 1


async def test_two_exports_served_under_one_name_are_both_kept(sim, downloads, tmp_path):
    a, b = sim.add_operation(size=1 << 20), sim.add_operation(size=1 << 20)
    ra = await downloads.download(op_params(a), tmp_path / "a.part", tmp_path)
    rb = await downloads.download(op_params(b), tmp_path / "b.part", tmp_path)
    assert ra.filename == "export.ndjson.gz" and rb.filename == f"export-{b}.ndjson.gz"
    assert hashlib.sha256(Path(ra.location).read_bytes()).hexdigest() == sim.file_sha256(a)
    assert hashlib.sha256(Path(rb.location).read_bytes()).hexdigest() == sim.file_sha256(b)
    again = await downloads.download(op_params(a), tmp_path / "a.part", tmp_path)  # a retry after the rename
    assert again.location == ra.location and len(list(tmp_path.iterdir())) == 2


async def test_the_served_name_is_sanitised(sim, downloads, tmp_path):
    op = sim.add_operation(size=1 << 20, filename="..\\..\\evil name;.gz")
    result = await downloads.download(op_params(op), tmp_path / "s.part", tmp_path)
    assert result.filename == "evil_name_.gz" and Path(result.location).parent == tmp_path


async def test_memory_stays_flat_on_a_64_mib_download(sim, downloads, tmp_path):
    op = sim.add_operation(size=64 << 20)
    sim.file_sha256(op)  # the simulator's own generator, outside the measurement
    tracemalloc.start()
    try:
        await downloads.download(op_params(op), tmp_path / "m.part", tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB for a 64 MiB download"


async def test_the_activity_resumes_from_its_heartbeat(sim, tmp_path):
    op = sim.add_operation(size=4 << 20)
    data = whole_file(sim, op)
    env = ActivityEnvironment()
    dest = tmp_path / "dest" / "up"  # subdir "../up" stays inside the destination
    part = dest / f".{safe_name(env.info.workflow_id, 80)}-{safe_name(env.info.activity_id, 40)}.part"
    dest.mkdir(parents=True)
    part.write_bytes(data[: 3 << 20] + b"written after the last heartbeat")
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[{"part": str(part), "bytes_done": 3 << 20}])
    beats = []
    env.on_heartbeat = lambda *d: beats.append(d[0]["bytes_done"] if d else None)
    served = sim.bytes_served(op)
    params = op_params(op, destination=str(tmp_path / "dest"), subdir="../up")
    client = FullstoryClient(API_KEY, sim.base_url, sim.base_url, timeout=10)
    try:
        activities = DownloadActivities(activity_deps(client, Settings(fullstory_data_dir=str(tmp_path))))
        result = await env.run(activities.download_to_destination, params)
    finally:
        await client.aclose()
    assert result.sha256 == sim.file_sha256(op) and Path(result.location) == dest / "export.ndjson.gz"
    assert sim.bytes_served(op) - served == 1 << 20
    assert beats[0] == 3 << 20 and beats[-1] == 4 << 20 and not part.exists()


CHECKERS = [ProcessGzipChecker, ThreadedGzipChecker]


@pytest.mark.parametrize("checker", CHECKERS)
def test_checkers_accept_multi_member_gzip(checker):
    data = gzip.compress(b"a" * 300_000) + gzip.compress(b"b" * 300_000) + gzip.compress(b"")
    c = checker()
    for i in range(0, len(data), 999):
        c.feed(data[i : i + 999])
    c.finish()
    assert c.members == 3


@pytest.mark.parametrize("checker", CHECKERS)
def test_checkers_reject_truncation(checker):
    c = checker()
    c.feed(gzip.compress(b"x" * 100_000)[:-4])
    with pytest.raises(GzipCorrupt):
        c.finish()


@pytest.mark.parametrize("checker", CHECKERS)
def test_checkers_stop_the_download_early_on_corrupt_data(checker):
    c = checker()
    fed = 0
    with pytest.raises(GzipCorrupt):
        c.feed(b"\x1f\x8b\x08\x00" + b"\xff" * 1000)
        for _ in range(64):  # far more than the pipe or queue holds
            c.feed(b"\0" * (1 << 20))
            fed += 1
    assert fed < 64  # a feed failed: the download stops instead of fetching bytes it can never store
    c.abandon()


# --- operation source, Range off, resets within an attempt, expiry mid-body, truncation, names ---------------


async def test_full_download_matches_the_simulator(sim, downloads, tmp_path):
    op = sim.add_operation(size=3 << 20, filename="my export.ndjson.gz")
    result = await downloads.download(op_params(op), tmp_path / "x.part", tmp_path, 0)
    data = Path(result.location).read_bytes()
    assert result.bytes == len(data) == 3 << 20
    assert result.sha256 == hashlib.sha256(data).hexdigest() == sim.file_sha256(op)
    assert result.filename == "my_export.ndjson.gz" and result.content_type == "application/gzip"
    assert gzip.decompress(data).count(b"\n") > 1000
    assert not (tmp_path / "x.part").exists()
    assert all("authorization" not in r.headers for r in requests_to(sim, STORAGE))


async def test_resumes_a_kept_part_with_range(sim, downloads, tmp_path):
    op = sim.add_operation(size=4 << 20)
    first = await downloads.download(op_params(op, filename="a.gz"), tmp_path / "a.part", tmp_path, 0)
    whole = Path(first.location).read_bytes()
    part = tmp_path / "b.part"
    part.write_bytes(whole[: 3 << 20] + b"garbage past the heartbeat")  # a crash left more than was heartbeated
    sim.reset_stats()
    result = await downloads.download(op_params(op, filename="b.gz"), part, tmp_path, 3 << 20)
    assert result.sha256 == sim.file_sha256(op) and result.bytes == 4 << 20
    (req,) = requests_to(sim, STORAGE)
    assert req.headers["range"] == f"bytes={3 << 20}-" and req.status == 206


async def test_without_range_support_it_restarts_cleanly(sim, downloads, tmp_path):
    op = sim.add_operation(size=2 << 20, range_support=False)
    part = tmp_path / "c.part"
    part.write_bytes(b"\x1f\x8b" + b"x" * 1000)  # a stale prefix that must not survive
    result = await downloads.download(op_params(op), part, tmp_path, 1002)
    assert result.sha256 == sim.file_sha256(op) and result.bytes == 2 << 20


async def test_connection_reset_mid_body_is_resumed_within_the_attempt(sim, downloads, tmp_path):
    op = sim.add_operation(size=4 << 20, reset_after_bytes=3 << 19, reset_count=2)  # resets at 1.5 MiB
    result = await downloads.download(op_params(op), tmp_path / "d.part", tmp_path, 0)
    assert result.sha256 == sim.file_sha256(op)
    ranges = [r.headers.get("range") for r in requests_to(sim, STORAGE)]
    assert len(ranges) == 3 and ranges[0] is None and all(x and x.startswith("bytes=") for x in ranges[1:])


async def test_expired_url_is_refreshed_and_the_download_carries_on(sim, downloads, tmp_path):
    offset = {"s": 0.0}
    sim.clock = lambda: time.time() + offset["s"]
    op = sim.add_operation(size=3 << 20, url_ttl=60, reset_after_bytes=2 << 20)
    sim.storage_bytes_per_second = 8 << 20

    async def expire_once_the_download_runs():
        while not requests_to(sim, STORAGE):
            await asyncio.sleep(0.005)
        offset["s"] = 600.0  # the URL dies mid-body; the reset makes the client reconnect with it

    expiry = asyncio.create_task(expire_once_the_download_runs())
    result = await downloads.download(op_params(op), tmp_path / "e.part", tmp_path, 0)
    await expiry
    assert result.sha256 == sim.file_sha256(op)
    statuses = [r.status for r in requests_to(sim, STORAGE)]
    assert statuses[:2] == [200, 403] and statuses[-1] == 206, statuses
    assert sim.count(route="/search/v1/exports/{export_id}/results") == 2


async def test_truncated_gzip_is_never_stored(sim, downloads, tmp_path):
    op = sim.add_operation(size=2 << 20, truncate_gzip=True)
    with pytest.raises(ApplicationError) as info:
        await downloads.download(op_params(op, filename="t.gz"), tmp_path / "t.part", tmp_path, 0)
    assert info.value.type == "DownloadCorrupt" and not info.value.non_retryable
    assert not (tmp_path / "t.gz").exists() and not (tmp_path / "t.part").exists()
    # The retry (the simulator truncates once) stores it whole.
    result = await downloads.download(op_params(op, filename="t.gz"), tmp_path / "t.part", tmp_path, 0)
    assert result.sha256 == sim.file_sha256(op)


async def test_without_the_gzip_check_a_truncated_file_fails_on_length(sim, downloads, tmp_path):
    op = sim.add_operation(size=1 << 20, truncate_gzip=True, truncate_count=1)
    result = await downloads.download(op_params(op, verify_gzip=False), tmp_path / "n.part", tmp_path, 0)
    # The simulator cut the body short but declared the short length: without the check only the size is known.
    assert result.bytes <= 1 << 20


def test_gzip_checker_accepts_multi_member_and_rejects_truncation():
    data = gzip.compress(b"a" * 100_000) + gzip.compress(b"b" * 100_000)
    checker = GzipChecker()
    for i in range(0, len(data), 1000):
        checker.feed(data[i : i + 1000])
    checker.finish()
    assert checker.members == 2
    cut = GzipChecker()
    cut.feed(data[:-10])
    with pytest.raises(GzipCorrupt):
        cut.finish()
    bad = GzipChecker()
    with pytest.raises(GzipCorrupt):
        bad.feed(b"\x1f\x8b\x08\x00" + b"\xff" * 100)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/x.gz", "x.gz"),
        ("a\\b.gz", "b.gz"),
        ("", "default.gz"),
        (None, "default.gz"),
        ("..", "default.gz"),
        (".hidden", "hidden"),
        ("na me;rm -rf.gz", "na_me_rm_-rf.gz"),
    ],
)
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw, "default.gz") == expected


@pytest.mark.parametrize(
    "header,expected",
    [
        ('attachment; filename="DataExport.json.gz"', "DataExport.json.gz"),
        ("attachment; filename=plain.gz", "plain.gz"),
        ("attachment; filename*=UTF-8''na%C3%AFve.gz", "naïve.gz"),
        ("inline", None),
        (None, None),
    ],
)
def test_filename_from_content_disposition(header, expected):
    assert filename_from_disposition(header) == expected
