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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from activities.locations import Locations, PartFile, Source
from vocabulary import errors
from vocabulary.contract import MAX_BATCH_REQUESTS

READ_BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"

Item = tuple[int, bytes]  # (line number, the item's JSON as UTF-8 on one line: what a batch sends)
Block = tuple[list[int], list[bytes]]  # items read together: their line numbers, and their JSON


def open_source(source: Source) -> IO[bytes]:
    """The source's bytes, gunzipped when its name ends in .gz or it starts with gzip's magic bytes."""
    raw = source.open()
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC or source.location.endswith(".gz"):
        from isal import igzip

        return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def read_items(source: Source, field: str) -> Iterator[Item]:
    """(line number, JSON bytes) per item: `read_item_blocks`, an item at a time."""
    for numbers, texts in read_item_blocks(source, field):
        yield from zip(numbers, texts, strict=True)


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
                    yield [line], [item]
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
        data = tail + block
        if block:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: read on
                tail = data
                continue
            data, tail = data[:cut], data[cut:]
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()  # after the last newline
        yield _checked(lines, number, where, field)
        number += len(lines)
        if not block:
            return


def _checked(lines: list[bytes], first: int, where: str, field: str) -> Block:
    """The non-blank lines of a block, numbered from `first`, each checked to be one JSON object.

    One pass with orjson over the block; only a block where it finds a fault is read again line by line,
    for the exact error and its line (and for what only Python's json reads: integers past 64 bits)."""
    texts = list(map(bytes.strip, lines))
    if all(texts):  # no blank line (the common case): every call below runs in C
        try:
            if set(map(type, map(orjson.loads, texts))) <= {dict}:
                return list(range(first, first + len(texts))), texts
        except orjson.JSONDecodeError:
            pass
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
                f"{field} {where!r} line {first + i}: an item must be a JSON object, not {_json_type(item)}"
            )
        numbers.append(first + i)
        texts.append(stripped)
    return numbers, texts


def _strict_json(line: bytes, number: int, where: str, field: str) -> Any:
    """A line orjson refused: Python's json decides (it takes integers past 64 bits) and words the error."""
    text = line.decode("utf-8")  # UnicodeDecodeError: "not UTF-8 text", as for the rest of the source
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.INVALID_INPUT(f"{field} {where!r} line {number}: not valid JSON ({e.msg})") from None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _array_items(text: io.TextIOWrapper, head: str, line: int, where: str, field: str) -> Iterator[Item]:
    """Items of one JSON array, decoded incrementally (a block at a time), with the line each starts on."""
    yield from _ArrayReader(text, head, line, where, field).items()


class _ArrayReader:
    """One JSON array read a block at a time: each item decoded whole, with the source line it starts on.

    Hand-written rather than an incremental JSON library (ijson and the like): those do not tell on which
    line of the source an item starts, and that line is part of the merged error report.

    `buf[pos:]` is what is read and not yet consumed; `line` is the source line of `buf[pos]`.
    """

    def __init__(self, text: io.TextIOWrapper, head: str, line: int, where: str, field: str) -> None:
        self.text, self.where, self.field = text, where, field
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.eof = head, head.index("[") + 1, False
        self.line = line

    def items(self) -> Iterator[Item]:
        expect_item, first = True, True
        while True:
            c = self._skip_ws()
            if c == "":
                raise self._bad("the JSON array is not closed")
            if c == "]" and (first or not expect_item):
                return
            if not expect_item:
                if c != ",":
                    raise self._bad(f"expected ',' or ']' between items, found {c!r}")
                self.pos += 1
                expect_item = True
                continue
            item, end = self._decode()
            if not isinstance(item, dict):
                raise self._bad(f"an item must be a JSON object, not {_json_type(item)}")
            raw = self.buf[self.pos : end]
            yield self.line, json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
            self.line += raw.count("\n")
            self.pos = end
            expect_item, first = False, False

    def _more(self) -> bool:
        """Read the next block after what is not yet consumed; False at the end of the source."""
        block = self.text.read(READ_BLOCK)
        if not block:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + block
        self.pos = 0
        return True

    def _skip_ws(self) -> str:
        """Skip whitespace (counting lines), reading on as needed: the next character, or "" at the end."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                if self.buf[self.pos] == "\n":
                    self.line += 1
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def _decode(self) -> tuple[Any, int]:
        """The JSON value at `pos` and where it ends, reading more blocks until it is whole."""
        while True:
            try:
                item, end = self.decoder.raw_decode(self.buf, self.pos)
                if end == len(self.buf) and not self.eof and not isinstance(item, (dict, list, str)):
                    raise json.JSONDecodeError("number may continue", self.buf, self.pos)  # a number cut by the block
                return item, end
            except json.JSONDecodeError as e:
                if self.eof or not self._more():
                    raise self._bad(f"not valid JSON ({e.msg})") from None

    def _bad(self, what: str) -> errors.ApplicationError:
        return errors.INVALID_INPUT(f"{self.field} {self.where!r} line {self.line}: {what}")


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


def write_staged_chunk(folder: Path, index: int, texts: list[bytes], lines: list[int], shared: Any) -> list[Path]:
    """Chunk `index` (the create body, one item a line) and its lines, each written whole; their paths."""
    body = b'{"requests":[\n' + b",\n".join(texts) + b"\n]"
    if shared is not None:
        body += b',"shared":' + json.dumps(shared, separators=(",", ":")).encode()
    paths = [folder / chunk_name(index), folder / lines_name(index)]
    for path, data in zip(paths, (body + b"}", json.dumps(lines, separators=(",", ":")).encode()), strict=True):
        part = PartFile(path)
        part.open(0)
        try:
            part.write(data)
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
