"""Reading a source of request items: a JSON array read a block at a time keeps every item's line.

The array reader is hand-written because it gives the source line of each item (the merged error report's
`line`). These tests cut arrays into blocks far smaller than an item, so every item, string and number
spans blocks, and check the lines, the items' texts and the error messages.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities import request_items
from activities.locations import Source
from activities.request_items import read_items

ITEMS = [
    {"uid": "a", "note": "a ] and a , and a {", "n": 1234567890123},
    {"uid": "b", "text": "two\nlines", "nested": [1, {"x": "}"}], "ok": True},
    {"uid": "ü", "score": -2.5e10, "none": None},
]


def pretty_array(items: list[dict]) -> str:
    """One item a few lines long (indent 2), each starting on a known line."""
    return "[\n" + ",\n".join(json.dumps(item, indent=2, ensure_ascii=False) for item in items) + "\n]\n"


def item_lines(text: str) -> list[int]:
    return [number for number, line in enumerate(text.splitlines(), 1) if line.startswith("{")]


@pytest.mark.parametrize("block", [1, 3, 7, 64])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_an_array_spanning_read_blocks_keeps_items_and_lines(tmp_path: Path, monkeypatch, block: int, compress: bool):
    monkeypatch.setattr(request_items, "READ_BLOCK", block)
    text = pretty_array(ITEMS)
    path = tmp_path / ("items.json.gz" if compress else "items.json")
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    got = list(read_items(Source(str(path)), "source"))
    assert [json.loads(t) for _, t in got] == ITEMS
    assert [number for number, _ in got] == item_lines(text) == [2, 7, 18]
    assert all(b"\n" not in t for _, t in got)  # compact: one chunk line per item


def test_a_one_line_array_bigger_than_a_block(tmp_path: Path):
    items = [{"uid": f"user-{i}", "pad": "x" * 40} for i in range(40_000)]  # about 2.5 MiB on one line
    path = tmp_path / "big.json"
    path.write_text(json.dumps(items))
    assert path.stat().st_size > 2 * request_items.READ_BLOCK
    got = list(read_items(Source(str(path)), "source"))
    assert [json.loads(t) for _, t in got] == items
    assert {number for number, _ in got} == {1}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[\n{"uid": "a"},\n{"uid": "b"}\n', "line 4: the JSON array is not closed"),
        ('[\n{"uid": "a"}\n{"uid": "b"}]', "line 3: expected ',' or ']' between items, found '{'"),
        ('[\n{"uid": "a"},\n12345678901234,\n{"uid": "b"}]', "line 3: an item must be a JSON object, not a number"),
        ('[\n{"uid": "a"},\n"a long string item"]', "line 3: an item must be a JSON object, not a string"),
        ('[\n{"uid": "a",\n "x": tru}]', "line 2: not valid JSON (Expecting value)"),
    ],
    ids=["not-closed", "no-comma", "number-cut-by-blocks", "string", "bad-json"],
)
def test_errors_in_an_array_spanning_read_blocks_name_the_line(tmp_path: Path, monkeypatch, text: str, needle: str):
    monkeypatch.setattr(request_items, "READ_BLOCK", 4)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ApplicationError) as info:
        list(read_items(Source(str(path)), "source"))
    assert info.value.type == "InvalidInput"
    assert f"source {str(path)!r} {needle}" == info.value.message


def test_ndjson_bytes_pass_through_and_errors_read_as_before(tmp_path: Path):
    path = tmp_path / "items.ndjson"
    path.write_bytes(b'{"uid": "a", "n": 123456789012345678901234567890}\r\n\n  {"uid": "\xc3\xa9"}  \n')
    got = list(read_items(Source(str(path)), "source"))
    # The item's own bytes (stripped), not a re-serialisation; integers past 64 bits are still taken.
    assert got == [(1, b'{"uid": "a", "n": 123456789012345678901234567890}'), (3, b'{"uid": "\xc3\xa9"}')]
    for content, needle in (
        (b'{"uid": "a"}\n{"uid": tru}\n', "line 2: not valid JSON (Expecting value)"),
        (b'{"uid": "a"}\n[1, 2]\n', "line 2: an item must be a JSON object, not an array"),
        (b'{"uid": "\xff"}\n', ": not UTF-8 text (invalid start byte)"),
    ):
        path.write_bytes(content)
        with pytest.raises(ApplicationError) as info:
            list(read_items(Source(str(path)), "source"))
        assert info.value.message == f"source {str(path)!r}{'' if needle.startswith(':') else ' '}{needle}"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        # A valid stream of JSON values whose lines are not: each line must be one object, whole.
        (b'{"uid": "a"}\n{"a": [{}\n{}]}, {}\n', "line 2: not valid JSON"),
        (b'{"uid": "a"}\n{"a": [{}\n{}]}\n', "line 2: not valid JSON"),
        (b'{"uid": "a"} {"uid": "b"}\n{"uid": "c"}\n', "line 1: not valid JSON (Extra data)"),
        (b'{"uid": "a",\n"x": 1}\n', "line 1: not valid JSON"),
        (b'{"uid": "a"}\n{"uid": "b"}\n"text"\n', "line 3: an item must be a JSON object, not a string"),
        (b'{"uid": "a"}\n{"uid": "b"}\n{"uid": "\xff"}\n', ": not UTF-8 text (invalid start byte)"),
    ],
    ids=["array-across-lines", "object-across-lines", "two-on-a-line", "split-object", "string", "not-utf8"],
)
def test_ndjson_lines_are_checked_one_by_one_whatever_the_block_holds(tmp_path: Path, content: bytes, needle: str):
    """The fast check reads a whole block at once; its answer is the same as reading each line alone."""
    path = tmp_path / "items.ndjson"
    path.write_bytes(content)
    with pytest.raises(ApplicationError) as info:
        list(read_items(Source(str(path)), "source"))
    assert info.value.message.startswith(f"source {str(path)!r}{'' if needle.startswith(':') else ' '}{needle}")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_many_blocks_of_ndjson_keep_every_line_number_and_byte(tmp_path: Path, monkeypatch, compress: bool):
    monkeypatch.setattr(request_items, "READ_BLOCK", 4096)
    lines = [json.dumps({"uid": f"u{i}", "n": 10**30 + i}).encode() for i in range(3000)]
    lines[1500] = b""  # a blank line in one block: that block is read line by line
    lines[2200] = b'  {"uid": "spaced"}\r'
    text = b"\n".join(lines)  # no newline after the last
    path = tmp_path / ("items.ndjson.gz" if compress else "items.ndjson")
    path.write_bytes(gzip.compress(text) if compress else text)
    got = list(read_items(Source(str(path)), "source"))
    want = [(i + 1, line.strip()) for i, line in enumerate(lines) if line]
    assert got == want


def test_a_staged_chunk_is_the_create_body_one_item_a_line(tmp_path: Path):
    fast = request_items._checked(b'{"a": 1}\n{"b": 2}\n', 2, 10, "x", "source")
    slow = request_items._checked(b'{"c": 3}\n\n {"d": 4}\n', 3, 12, "x", "source")
    assert isinstance(fast, request_items.Run) and not isinstance(slow, request_items.Run)
    head, rest = fast.split(1)
    request_items.write_staged_chunk(tmp_path, 0, [head, rest, slow], {"s": 1})
    body = (tmp_path / "chunk-00000.json").read_bytes()
    assert body == b'{"requests":[\n{"a": 1},\n{"b": 2},\n{"c": 3},\n{"d": 4}\n],"shared":{"s":1}}'
    assert json.loads((tmp_path / "lines-00000.json").read_bytes()) == [10, 11, 12, 14]
    with (tmp_path / "chunk-00000.json").open("rb") as fh:
        assert list(request_items.staged_items(fh)) == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', b'{"d": 4}']


def test_error_items_are_found_in_their_chunk_by_a_string_of_their_own(tmp_path: Path):
    from activities.item_lines import canonical, find_lines

    items = [{"uid": f"user-{i}", "plan": "pro", "n": i} for i in range(300)]
    items.append(dict(items[7]))  # the same item twice: both lines, the first popped first
    lines = [json.dumps(item).encode() for item in items]
    lines[20] = b'{"n": 20, "plan": "pro", "uid": "user-20"}'  # any key order
    request_items.write_staged_chunk(tmp_path, 0, [request_items.Block(list(range(5, 306)), lines)], None)
    chunk = (tmp_path / "chunk-00000.json").read_bytes()
    numbers = json.loads((tmp_path / "lines-00000.json").read_bytes())
    wanted = {canonical(items[i]): items[i] for i in (0, 7, 20, 299)}
    found = find_lines(chunk, numbers, wanted)
    assert found == {canonical(items[0]): [5], canonical(items[7]): [305, 12], canonical(items[20]): [25],
                     canonical(items[299]): [304]}  # fmt: skip
    assert find_lines(chunk, numbers, {canonical({"uid": "nobody"}): {"uid": "nobody"}}) is None
    assert find_lines(chunk, numbers, {canonical({"plan": "pro"}): {"plan": "pro"}}) is None  # in every line
    escaped = b'{"uid": "\\u0075ser-0", "plan": "pro", "n": 0}'  # the same item, written otherwise
    assert find_lines(b"{\n" + escaped + b"\n]}", [1], {canonical(items[0]): items[0]}) is None
