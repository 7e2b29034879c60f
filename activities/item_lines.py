"""Which source line an error record's item came from, found without reading every item of its chunk.

A bulk import's merged error report gives each record the `line` of its item in the source. Fullstory echoes
the item, not its position, so the item is looked up in its staged chunk by content (`canonical`: any key
order). Reading all 50,000 items of a chunk to find 10 costs ~0.2 s of CPU per batch, while the next batches
are being created; so for a few records each item is first looked for by a string of its own (its longest
string value, as JSON writes it) with `bytes.find`, and only the lines holding it are read. When that finds
nothing for some item (a value the source escaped differently, say), the caller reads the whole chunk.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import orjson

MAX_HITS = 64  # lines holding one item's anchor, at most: past that the anchor is too common to help
MIN_ANCHOR = 4


def canonical(item: Any) -> bytes:
    """An item's identity, whatever its key order: how an error record's echoed item finds its source line.

    A 128-bit digest of its sorted-key JSON: 16 bytes a key (orjson's own output keeps a 4 KiB buffer, so
    50,000 items would hold 200 MiB). orjson on both sides: it reads integers past 64 bits as floats,
    alike on both, so they still match."""
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def anchor(item: Any) -> bytes | None:
    """The item's longest string value as JSON writes it (printable ASCII, nothing to escape), or None."""
    plain = [s for s in _strings(item) if len(s) >= MIN_ANCHOR and s.isascii() and s.isprintable()]
    plain = [s for s in plain if '"' not in s and "\\" not in s]
    return b'"' + max(plain, key=len).encode() + b'"' if plain else None


def find_lines(chunk: bytes, numbers: list[int], wanted: dict[bytes, Any]) -> dict[bytes, list[int]] | None:
    """`wanted` items (canonical -> item) -> their source lines, first occurrence last (for pop()); `chunk`
    is a staged chunk's bytes (a first line, then one item a line) and `numbers` its items' lines.
    None when some item is not found this way: then every item of the chunk has to be read."""
    hits: list[tuple[int, bytes]] = []  # (where the item's line starts in the chunk, which item)
    for digest, item in wanted.items():
        mark = anchor(item)
        if mark is None:
            return None
        found, pos, seen = 0, chunk.find(mark), 0
        while pos != -1:
            seen += 1
            if seen > MAX_HITS:
                return None
            start, end = chunk.rfind(b"\n", 0, pos) + 1, chunk.find(b"\n", pos)
            end = len(chunk) if end == -1 else end
            try:
                if canonical(orjson.loads(chunk[start:end].rstrip(b"\r").removesuffix(b","))) == digest:
                    hits.append((start, digest))
                    found += 1
            except orjson.JSONDecodeError:
                pass  # not an item's line (the chunk's last line, with "shared")
            pos = chunk.find(mark, end)
        if not found:
            return None
    lines: dict[bytes, list[int]] = defaultdict(list)
    at, row = 0, -1  # row: the item's index (the chunk's first line is not an item)
    for start, digest in sorted(hits):
        row += chunk.count(b"\n", at, start)
        at = start
        if 0 <= row < len(numbers):
            lines[digest].append(numbers[row])
    for queue in lines.values():
        queue.reverse()
    return lines
