"""Locations: one resolver for every place a workflow reads or writes, inside FULLSTORY_ALLOWED_LOCATIONS."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.locations import Locations
from helpers import TemporalClock, running_worker


def outside(err: ApplicationError) -> bool:
    return err.type == "InvalidInput" and "FULLSTORY_ALLOWED_LOCATIONS" in err.message


def test_default_allows_the_data_dir_and_object_stores_only(tmp_path):
    data = tmp_path / "data"
    locations = Locations(str(data))
    assert locations.destination(None).local == data.resolve()
    assert locations.destination(str(data / "sub")).local == (data / "sub").resolve()
    assert locations.destination(f"file://{data}/x").local == (data / "x").resolve()
    assert locations.destination("s3://bucket/prefix/").remote == "s3://bucket/prefix"
    for bad in (str(tmp_path / "elsewhere"), "/etc", "http://example.com/x", "memory://x", "ftp://h/x"):
        with pytest.raises(ApplicationError) as info:
            locations.destination(bad)
        assert outside(info.value), bad
        assert info.value.non_retryable


def test_dot_dot_and_symlinks_cannot_escape_a_root(tmp_path):
    root, secret = tmp_path / "root", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    (secret / "users.json").write_text("[]")
    (root / "link").symlink_to(secret)
    locations = Locations(str(root), str(root))
    for bad in (f"{root}/../secret", f"{root}/link", f"{root}/link/users.json", f"file://{root}/../secret"):
        with pytest.raises(ApplicationError) as info:
            locations.source(bad, "requests_url")
        assert outside(info.value) and "requests_url" in info.value.message, bad
    assert locations.source(f"{root}/a/../b.json", "requests_url").location == str(root.resolve() / "b.json")


def test_url_prefixes_match_whole_segments():
    locations = Locations("/nonexistent-data-dir", "s3://bucket/exports, file:///nonexistent-root, s3://other")
    assert (
        locations.source("s3://bucket/exports/users.json", "requests_url").location == "s3://bucket/exports/users.json"
    )
    assert locations.source("s3://bucket/exports", "requests_url").location == "s3://bucket/exports"
    assert locations.source("s3://other/anything", "requests_url").location == "s3://other/anything"
    for bad in ("s3://bucket/exports2/x", "s3://bucket", "s3://bucket/exports/../secrets/x", "/tmp/x"):
        with pytest.raises(ApplicationError) as info:
            locations.source(bad, "requests_url")
        assert outside(info.value), bad
    assert "s3://bucket/exports" in Locations("/d", "s3://bucket/exports").describe()


def test_an_allowed_scheme_without_a_filesystem_is_unsupported():
    with pytest.raises(ApplicationError) as info:
        Locations("/d", "nosuchfs://x").destination("nosuchfs://x/y")
    assert info.value.type == "UnsupportedDestination"


# --- Opening, reading, writing whole and publishing -------------------------------------------------------------


def test_source_opens_a_local_path_and_a_file_url(tmp_path):
    (tmp_path / "items.ndjson").write_bytes(b'{"a":1}\n{"a":2}\n')
    locations = Locations(str(tmp_path))
    for where in (str(tmp_path / "items.ndjson"), f"file://{tmp_path}/x/../items.ndjson"):
        source = locations.source(where, "source")
        assert source.describe() == str(tmp_path.resolve() / "items.ndjson")
        with source.open() as fh:
            assert list(fh) == [b'{"a":1}\n', b'{"a":2}\n']
            fh.seek(0)
            assert fh.read(2) == b'{"'
    with pytest.raises(FileNotFoundError):
        locations.source(str(tmp_path / "missing.json"), "source").open()


def test_source_opens_an_object_store_url(s3_bucket):
    fs, bucket = s3_bucket
    fs.pipe(f"{bucket}/in/items.ndjson", b'{"a":1}\n{"a":2}\n')
    locations = Locations("/nonexistent-data-dir", f"s3://{bucket}/in")
    source = locations.source(f"s3://{bucket}/in/items.ndjson", "source")
    assert source.describe() == f"s3://{bucket}/in/items.ndjson"
    with source.open() as fh:
        assert list(fh) == [b'{"a":1}\n', b'{"a":2}\n']
    with pytest.raises(FileNotFoundError):
        locations.source(f"s3://{bucket}/in/missing.json", "source").open()


def test_local_destination_writes_whole_and_publishes_in_place(tmp_path):
    dest = Locations(str(tmp_path)).destination(str(tmp_path / "out"))
    assert dest.remote is None and dest.read_text("m.json") is None and dest.size_of("m.json") is None
    assert dest.write_atomic("m.json", b"one") == str(tmp_path.resolve() / "out" / "m.json")
    assert dest.write_atomic("m.json", b"two!") == dest.location(dest.local / "m.json")
    assert dest.read_text("m.json") == "two!" and dest.size_of("m.json") == 4
    assert sorted(p.name for p in dest.local.iterdir()) == ["m.json"]  # no temporary left behind
    assert dest.write_atomic("sub/x.json", b"{}") == str(dest.local / "sub" / "x.json")
    built = dest.local / "f.ndjson"
    built.write_text("x\n")
    assert asyncio.run(dest.publish(built)) == str(built) and built.exists()


def test_object_store_destination_writes_whole_and_publishes(tmp_path, s3_bucket):
    fs, bucket = s3_bucket
    dest = Locations(str(tmp_path)).destination(f"s3://{bucket}/out/")
    assert dest.remote == f"s3://{bucket}/out" and dest.local.is_relative_to(tmp_path.resolve() / ".staging")
    assert dest.read_text("m.json") is None and dest.size_of("m.json") is None
    assert dest.write_atomic("m.json", b"one") == f"s3://{bucket}/out/m.json"
    assert dest.write_atomic("m.json", b"two!") == f"s3://{bucket}/out/m.json"
    assert dest.read_text("m.json") == "two!" and dest.size_of("m.json") == 4
    built = dest.local / "sub" / "f.ndjson"
    built.parent.mkdir()
    built.write_text("x\n")
    assert asyncio.run(dest.publish(built)) == f"s3://{bucket}/out/sub/f.ndjson"
    assert not built.exists() and fs.cat(f"{bucket}/out/sub/f.ndjson") == b"x\n"
    assert sorted(fs.find(bucket)) == [f"{bucket}/out/m.json", f"{bucket}/out/sub/f.ndjson"]
    missing = Locations(str(tmp_path)).destination("s3://no-such-bucket-here-x/out")
    with pytest.raises(ApplicationError) as info:
        missing.write_atomic("m.json", b"x")
    assert info.value.type == "DestinationNotWritable" and "no-such-bucket-here-x" in info.value.message


# --- End to end: a workflow fails before any call to Fullstory -------------------------------------------------


@pytest_asyncio.fixture(autouse=True)
async def _simulator_on_server_time(ts_env, sim):
    sim.clock = await TemporalClock.start(ts_env)


async def failure(env, task_queue, workflow: str, inp: dict) -> ApplicationError:
    handle = await env.client.start_workflow(workflow, inp, id=f"loc-{uuid.uuid4().hex}", task_queue=task_queue)
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    return info.value.cause


async def test_locations_outside_the_allow_list_fail_before_any_call(ts_env, sim, tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "users.json").write_text(json.dumps([{"uid": "u1"}]))
    async with running_worker(ts_env.client, sim.base_url, data) as tq:
        for workflow, inp in [
            ("BatchImportWorkflow", {"kind": "users", "requests_url": str(elsewhere / "users.json")}),
            ("BatchImportWorkflow", {"kind": "users", "requests": [{"uid": "u1"}], "destination": str(elsewhere)}),
            ("BatchImportWorkflow", {"kind": "users", "requests": [{"uid": "u1"}], "destination": "memory://x"}),
            (
                "SegmentExportWorkflow",
                {
                    "segment_id": "s",
                    "destination": "http://example.com/up",
                    "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
                },
            ),
            ("DataExportSyncWorkflow", {"start": 1_700_000_000, "destination": f"{data}/../elsewhere"}),
        ]:
            err = await failure(ts_env, tq, workflow, inp)
            assert outside(err), (workflow, inp, err.message)
    assert sim.requests == []  # not one call to Fullstory
    assert not any(elsewhere.iterdir()) or [p.name for p in elsewhere.iterdir()] == ["users.json"]


async def test_an_allowed_extra_root_is_usable(ts_env, sim, tmp_path):
    data, extra = tmp_path / "data", tmp_path / "imports"
    extra.mkdir()
    (extra / "users.json").write_text(json.dumps([{"uid": "u1"}, {"uid": "u2"}]))
    async with running_worker(ts_env.client, sim.base_url, data, fullstory_allowed_locations=f"{data},{extra}") as tq:
        handle = await ts_env.client.start_workflow(
            "BatchImportWorkflow",
            {"kind": "users", "requests_url": str(extra / "users.json"), "destination": str(extra / "out")},
            id=f"loc-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        result = await handle.result()
    assert result["status"] == "COMPLETED" and result["imports"] == 2
