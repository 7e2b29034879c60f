"""Serving an export file: Range, Content-Disposition, and the per-file faults (reset, truncated gzip)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from .files import GzipFile, Truncated
from .protocol import Request, Response, error
from .table_files import TableFile

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Download:
    """One downloadable file and how it misbehaves."""

    id: str
    size: int
    filename: str
    file_format: str = "ndjson"
    seed: int = 0
    range_support: bool = True
    url_ttl: float = 300.0  # signed URLs to it live this long
    reset_after_bytes: int | None = None  # reset the connection after this many body bytes...
    reset_count: int = 1  # ...on this many downloads
    truncate_gzip: bool = False  # serve the file cut short...
    truncate_count: int = 1  # ...on this many downloads
    bytes_served: int = 0
    downloads: int = 0
    head: str = ""  # the file's first row (GzipFile's head): e.g. the export's requested timeRange
    table_rows: int = 0  # > 0: a file of that many real, distinct rows (table_files.py) instead of blocks
    table_time: tuple[float, float] = (0.0, 3600.0)  # ...their EventStart times fall in [start, stop)
    new_field_from: float | None = None  # ...and rows of a file starting from then carry one more field
    _file: GzipFile | TableFile | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.table_rows > 0:
            _ = self.file  # built now: its size is the size the API reports

    @property
    def file(self) -> GzipFile | TableFile:
        with self._lock:
            if self._file is None and self.table_rows > 0:
                start, stop = self.table_time
                self._file = TableFile(self.table_rows, self.file_format, self.seed, start, stop, self.new_field_from)
                self.size = self._file.size
            if self._file is None:
                self._file = GzipFile(self.size, self.file_format, self.seed, self.head)
            return self._file

    def sha256(self) -> str:
        return self.file.sha256()

    def count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def serve(self, req: Request) -> Response:
        file = self.file
        stream: GzipFile | Truncated = file
        reset_after = None
        if req.method != "HEAD":
            with self._lock:
                self.downloads += 1
                if self.truncate_gzip and self.truncate_count > 0:
                    self.truncate_count -= 1
                    stream = Truncated(file, max(1, file.size * 2 // 3))
                if self.reset_after_bytes is not None and self.reset_count > 0:
                    self.reset_count -= 1
                    reset_after = self.reset_after_bytes
        total = stream.length
        headers = {
            "Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{self.filename}"',
            "Accept-Ranges": "bytes" if self.range_support else "none",
        }
        status, start, end = 200, 0, total
        spec = req.headers.get("range")
        if spec and self.range_support:
            m = RANGE.match(spec.strip())
            if not m or not (m.group(1) or m.group(2)):
                return error(416, f"unsupported Range {spec!r}", "invalid_range", {"Content-Range": f"bytes */{total}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(total, int(m.group(2)) + 1) if m.group(2) else total
            else:  # bytes=-N: the last N bytes
                start = max(0, total - int(m.group(2)))
            if start >= total or start >= end:
                return error(
                    416,
                    f"Range {spec!r} is outside the {total} bytes",
                    "invalid_range",
                    {"Content-Range": f"bytes */{total}"},
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        return Response(
            status,
            headers=headers,
            stream=stream,
            stream_range=(start, end),
            reset_after=reset_after,
            on_bytes=self.count_bytes,
        )
