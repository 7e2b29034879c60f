"""One JSON array of request items read a block at a time, each item with the source line it starts on.

Used by activities/request_items.py for a source that is a JSON array rather than NDJSON.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

from vocabulary import errors


def json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


class ArrayReader:
    """One JSON array read a block at a time: each item decoded whole, with the source line it starts on.

    Hand-written rather than an incremental JSON library (ijson and the like): those do not tell on which
    line of the source an item starts, and that line is part of the merged error report.

    `buf[pos:]` is what is read and not yet consumed; `line` is the source line of `buf[pos]`.
    """

    def __init__(self, text: io.TextIOWrapper, head: str, line: int, where: str, field: str, block: int) -> None:
        self.text, self.where, self.field, self.block = text, where, field, block
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.eof = head, head.index("[") + 1, False
        self.line = line

    def items(self) -> Iterator[tuple[int, bytes]]:
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
                raise self._bad(f"an item must be a JSON object, not {json_type(item)}")
            raw = self.buf[self.pos : end]
            yield self.line, json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
            self.line += raw.count("\n")
            self.pos = end
            expect_item, first = False, False

    def _more(self) -> bool:
        """Read the next block after what is not yet consumed; False at the end of the source."""
        block = self.text.read(self.block)
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
