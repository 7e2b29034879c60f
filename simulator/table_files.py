"""Export files with real, distinct rows, for loading them as tables (`table_rows=N`).

The block files (files.py) repeat a few blocks of rows to reach any size fast; a table needs each row
once: here every row has its own EventId (from the file's seed and its index), an EventStart inside the
file's time range, numbers, a boolean-ish flag and nested properties. Rows of a file answering the same
request are the same every time (a re-export of a window yields the same rows), and from `new_field_from`
on, rows carry one more field (a column that first appears in a later window). NDJSON, a JSON array
or CSV (nested values as JSON text), gzipped whole.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

NEW_FIELD = "EventSentiment"


def table_rows(count: int, seed: int, start: float, stop: float, new_field_from: float | None = None) -> list[dict]:
    rows = []
    step = (stop - start) / max(count, 1)
    for i in range(count):
        t = start + (i + 0.5) * step
        ms = int(t * 1000)
        row: dict[str, Any] = {
            "EventId": hashlib.sha1(f"{seed}-{i}".encode()).hexdigest()[:32],
            "EventStart": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z",
            "EventType": ("click", "navigate", "change", "load")[i % 4],
            "IndvId": 1_000_000 + (seed * 7 + i) % 997,
            "PageDuration": 1000 + i * 37 % 600_000,
            "PageMaxScrollDepthPercent": (i * 13) % 101 / 1.0,
            "EventModFrustrated": i % 17 == 0,
            "PageUrl": f"https://www.example.com/products/{i % 50}",
            "UserVars": {"plan": ("free", "pro", "enterprise")[i % 3], "seats": i % 9, "tags": ["a", f"t{i % 5}"]},
        }
        if new_field_from is not None and start >= new_field_from:
            row[NEW_FIELD] = round((i % 21) / 10 - 1, 1)
        rows.append(row)
    return rows


def encode(rows: list[dict], fmt: str) -> bytes:
    if fmt == "ndjson":
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    elif fmt == "json":
        text = "[" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in rows) + "]\n"
    elif fmt == "csv":
        out = io.StringIO()
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list, bool)) else v for k, v in r.items()})
        text = out.getvalue()
    else:
        raise ValueError(f"table files are ndjson, json or csv, not {fmt!r}")
    return gzip.compress(text.encode(), mtime=0)


class TableFile:
    """The same interface as files.GzipFile (size, length, write, sha256, rows), with real rows."""

    def __init__(self, count: int, fmt: str, seed: int, start: float, stop: float, new_field_from: float | None):
        self.data = encode(table_rows(count, seed, start, stop, new_field_from), fmt)
        self.length = self.size = len(self.data)
        self.rows = count

    def write(self, send: Callable[[memoryview], None], start: int, end: int) -> None:
        send(memoryview(self.data)[start:end])

    def iter_bytes(self, start: int = 0, end: int | None = None) -> list[memoryview]:
        return [memoryview(self.data)[start : self.size if end is None else end]]

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()
