"""Reading a source of request items: NDJSON (one item a line) or one JSON array, gzip or not.

Every item comes with the source line it starts on: the merged error report of a bulk import gives
each record's `line`. Never the whole source in memory: a block of `READ_BLOCK` characters at a time.

Used by the bulk import's staging (activities/bulk_import.py) and by `requests_url` of a single batch
job (activities/batch_job.py). Also the format of a staged chunk, which both of them read:

- `chunk-NNNNN.json`: the very body of the batch create, `{"requests":[` one item a line `],"shared":...}`:
  the create sends its bytes as they are (the same bytes after any crash: the Idempotency-Key holds);
- `lines-NNNNN.json`: the source line of each item, for the merged error report.
(Chunks staged before 2026-12 hold their lines inside, under "lines", and are read the old way.)
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from activities.json_array import ArrayReader, json_type
from activities.locations import Locations, PartFile, Source
from vocabulary import errors
from vocabulary.contract import MAX_BATCH_REQUESTS

READ_BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
_RAW_LINES = msgspec.json.Decoder(msgspec.Raw)  # checks JSON without building objects: one C pass a block

Item = tuple[int, bytes]  # (line number, the item's JSON as UTF-8 on one line: what a batch sends)


class Block:
    """Items read together, in source order: their line numbers and their JSON (as bytes, one line each)."""

    __slots__ = ("lines", "texts")

    def __init__(self, lines: list[int], texts: list[bytes]) -> None:
        self.lines, self.texts = lines, texts

    def __len__(self) -> int:
        return len(self.texts)

    def numbers(self) -> Iterable[int]:
        return self.lines

    def items(self) -> list[bytes]:
        return self.texts

    def split(self, k: int) -> tuple[Block, Block]:
        """The first `k` items, and the rest."""
        return Block(self.lines[:k], self.texts[:k]), Block(self.lines[k:], self.texts[k:])

    def pieces(self) -> list[bytes]:
        """The items as a staged chunk has them: each followed by `,` and a newline."""
        return [b",\n".join(self.texts), b",\n"] if self.texts else []


class Run(Block):
    """Items that are whole lines of the source, one after another, with nothing else: `data` is their
    bytes as read, each item ending in a newline (the lines and texts are made only when asked for)."""

    __slots__ = ("data", "first", "lens")

    def __init__(self, first: int, data: bytes, lens: list[int]) -> None:
        self.first, self.data, self.lens = first, data, lens

    def __len__(self) -> int:
        return len(self.lens)

    def numbers(self) -> Iterable[int]:
        return range(self.first, self.first + len(self.lens))

    def items(self) -> list[bytes]:
        return self.data.split(b"\n")[: len(self.lens)]

    def split(self, k: int) -> tuple[Block, Block]:
        cut = sum(self.lens[:k]) + k
        return Run(self.first, self.data[:cut], self.lens[:k]), Run(self.first + k, self.data[cut:], self.lens[k:])

    def pieces(self) -> list[bytes]:
        return [self.data.replace(b"\n", b",\n")] if self.lens else []


def open_source(source: Source) -> IO[bytes]:
    """The source's bytes, gunzipped when its name ends in .gz or it starts with gzip's magic bytes."""
    raw = source.open()
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC or source.location.endswith(".gz"):
        from isal import igzip_threaded

        # Inflated on a thread of its own (ISA-L lets go of the GIL): it runs beside the parsing, on another core.
        return igzip_threaded.open(raw, "rb", threads=1)
    return raw


def read_items(source: Source, field: str) -> Iterator[Item]:
    """(line number, JSON bytes) per item: `read_item_blocks`, an item at a time."""
    for block in read_item_blocks(source, field):
        yield from zip(block.numbers(), block.items(), strict=True)


def read_item_blocks(source: Source, field: str) -> Iterator[Block]:
    """(line number, JSON bytes) per item, a block of items at a time: NDJSON (blank lines skipped) or one
    JSON array (a block of one).

    An NDJSON line's bytes pass through as they are (stripped), checked by a fast parser (orjson): no
    decoding to text and no re-serialising (orjson reads integers past 64 bits as floats, so its objects
    are only looked at, never sent). InvalidInput, naming the line, for anything that is not a
    JSON object; unreadable: InvalidInput.
    """
    where = source.describe()
    try:
        with open_source(source) as fh:
            number, head = 0, b""
            while True:
                piece = fh.readline(READ_BLOCK)  # bounded: a one-line array is read a block at a time
                if not piece:
                    return
                number += 1
                if piece.strip():
                    head = piece
                    break
            if head.lstrip().startswith(b"["):
                text = io.TextIOWrapper(fh, encoding="utf-8", newline="\n")
                for line, item in _array_items(text, head.decode("utf-8"), number, where, field):
                    yield Block([line], [item])
            else:
                if not head.endswith(b"\n"):
                    head += fh.readline()
                yield from _ndjson_items(head, number, fh, where, field)
    except FileNotFoundError:
        raise errors.INVALID_INPUT(f"{field} {where!r}: no such file") from None
    except UnicodeDecodeError as e:
        raise errors.INVALID_INPUT(f"{field} {where!r}: not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError) as e:
        raise errors.INVALID_INPUT(f"{field} {where!r}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def _ndjson_items(head: bytes, number: int, fh: IO[bytes], where: str, field: str) -> Iterator[Block]:
    """Items of NDJSON, a block of lines at a time (`head` is the first non-blank line, number `number`)."""
    tail = head
    while True:
        block = fh.read(READ_BLOCK)
        if block:
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: read on
                tail += block
                continue
            data, tail = (tail + memoryview(block)[:cut] if tail else block[:cut]), block[cut:]
        else:
            data = tail
        lines = data.count(b"\n") + (not data.endswith(b"\n"))
        checked = _checked(data, lines, number, where, field)
        if len(checked):
            yield checked
        number += lines
        if not block:
            return


def _checked(data: bytes, lines: int, first: int, where: str, field: str) -> Block:
    """The non-blank lines of `data` (`lines` whole lines), numbered from `first`, each checked to be one JSON
    object.

    The common case in a few passes in C, building no object: msgspec checks the whole block as a stream of
    JSON values (kept as raw spans, not decoded), and each newline in it lies between `}` and `{`. No JSON
    value holds `}`, whitespace, `{` (after a `}` comes `,`, `]`, `}` or its end), nor a newline inside a
    string: so no value spans two lines, and every line starts with `{` and ends with `}`, so it holds at
    least one value: as many values as lines means each line is one JSON object, whole. Only a block where
    that fails is read again line by line, for the exact error and its line (and for what only Python's
    json takes: lone surrogates, say). Not UTF-8: the line by line reading says where."""
    if data.startswith(b"{") and data.endswith((b"}\n", b"}")) and (data.isascii() or _utf8(data)):
        try:
            spans = _RAW_LINES.decode_lines(data)
        except msgspec.DecodeError:
            spans = None
        if spans is not None and len(spans) == lines and data.count(b"}\n{") == lines - 1:
            if not data.endswith(b"\n"):
                data += b"\n"
            return Run(first, data, list(map(len, spans)))
    return _checked_line_by_line(data.split(b"\n"), first, where, field)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _checked_line_by_line(lines: list[bytes], first: int, where: str, field: str) -> Block:
    numbers, texts = [], []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            item = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            item = _strict_json(stripped, first + i, where, field)
        if type(item) is not dict:
            raise errors.INVALID_INPUT(
                f"{field} {where!r} line {first + i}: an item must be a JSON object, not {json_type(item)}"
            )
        numbers.append(first + i)
        texts.append(stripped)
    return Block(numbers, texts)


def _strict_json(line: bytes, number: int, where: str, field: str) -> Any:
    """A line orjson refused: Python's json decides (it takes integers past 64 bits) and words the error."""
    text = line.decode("utf-8")  # UnicodeDecodeError: "not UTF-8 text", as for the rest of the source
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.INVALID_INPUT(f"{field} {where!r} line {number}: not valid JSON ({e.msg})") from None


def _array_items(text: io.TextIOWrapper, head: str, line: int, where: str, field: str) -> Iterator[Item]:
    """Items of one JSON array, decoded incrementally (a block at a time), with the line each starts on."""
    yield from ArrayReader(text, head, line, where, field, READ_BLOCK).items()


def load_requests_file(locations: Locations, url: str) -> tuple[list[Any], dict[str, Any] | None]:
    """Read `requests_url`: a JSON list of items, {"requests": [...], "shared": {...}}, or NDJSON; gzip or not."""
    source = locations.source(url, "requests_url")
    where = source.describe()
    try:
        with open_source(source) as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        reason = getattr(e, "strerror", None) or e
        raise errors.INVALID_INPUT(f"requests_url {where!r}: cannot read: {reason}") from None
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as e:
        raise errors.INVALID_INPUT(f"requests_url {where!r}: not valid JSON: {e}") from None
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise errors.INVALID_INPUT(f"requests_url {where!r}: not valid JSON: {e}") from None
        data = [json.loads(text) for _, text in read_items(source, "requests_url")]  # NDJSON: one item a line
    shared = None
    if isinstance(data, dict):
        shared = data.get("shared")
        data = data.get("requests")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise errors.INVALID_INPUT(f'requests_url {where!r}: expected a JSON list of objects or {{"requests": [...]}}')
    if not 1 <= len(data) <= MAX_BATCH_REQUESTS:
        raise errors.INVALID_INPUT(
            f"requests_url {where!r}: holds {len(data):,} requests; a batch takes 1..{MAX_BATCH_REQUESTS:,}"
        )
    return data, shared


# --- Staged chunks ---------------------------------------------------------------------------------------

_CHUNK = re.compile(r"chunk-(\d{5})\.json$")


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.json"


def lines_name(index: int) -> str:
    return f"lines-{index:05d}.json"


def write_staged_chunk(folder: Path, index: int, blocks: list[Block], shared: Any) -> list[Path]:
    """Chunk `index` (the create body, one item a line) and its lines, each written whole; their paths.

    The body goes out in pieces, as the blocks hold them (no copy of it whole); the lines by orjson."""
    pieces = [piece for block in blocks for piece in block.pieces()]
    last = pieces.pop()[:-2]  # no `,` and newline after the last item
    tail = b"\n]"
    if shared is not None:
        tail += b',"shared":' + json.dumps(shared, separators=(",", ":")).encode()
    body = (b'{"requests":[\n', *pieces, last, tail + b"}")
    lines = orjson.dumps(list(chain.from_iterable(block.numbers() for block in blocks)))
    paths = [folder / chunk_name(index), folder / lines_name(index)]
    for path, data in zip(paths, (body, (lines,)), strict=True):
        part = PartFile(path)
        part.open(0)
        try:
            for piece in data:
                part.write(piece)
            part.commit()
        finally:
            part.close()
    return paths


def staged_lines(locations: Locations, chunk_location: str) -> list[int] | None:
    """The source lines of a staged chunk's items; None for a file that is no staged chunk (or an old one)."""
    found = _CHUNK.search(chunk_location)
    if found is None:
        return None
    lines_location = chunk_location[: found.start()] + lines_name(int(found.group(1)))
    try:
        with locations.source(lines_location, "chunk lines").open() as fh:
            lines = json.loads(fh.read())
    except FileNotFoundError:
        return None
    return lines if isinstance(lines, list) else None


def staged_items(fh: IO[bytes]) -> Iterator[bytes]:
    """The items of a staged chunk (as written by `write_staged_chunk`), a line at a time."""
    fh.readline()  # {"requests":[
    for line in fh:
        if line.startswith(b"]"):
            return
        yield line.rstrip(b"\r\n").removesuffix(b",")
