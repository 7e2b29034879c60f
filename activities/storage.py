"""Writing files so that nothing partial is ever visible at a final name.

Where a destination is, and whether it is allowed, is activities/locations.py.
Files are always written locally first, as `<name>.part`, renamed to `<name>`
only when complete; for an object store that complete file is then uploaded
(S3: one PUT or a multipart upload, visible only once committed) and the
local copy removed. So nothing partial is ever visible at a final name.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from activities.locations import Destination
from vocabulary import errors

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_name(text: str, max_len: int = 120) -> str:
    """A file-name component from an id: no separators, no traversal, bounded length."""
    name = _UNSAFE.sub("_", text).strip("._") or "unnamed"
    return name[:max_len]


async def publish(dest: Destination, path: Path) -> str:
    """Make a complete local file visible at the destination; returns its location."""
    if dest.remote is None:
        return str(path)
    import fsspec

    target = dest.location(path)
    fs, remote_path = fsspec.core.url_to_fs(target)
    try:
        await asyncio.to_thread(fs.put_file, str(path), remote_path)
    except (PermissionError, FileNotFoundError) as e:
        raise errors.DESTINATION_NOT_WRITABLE(f"destination {dest.remote!r}: cannot write {target}: {e}") from None
    path.unlink()
    return target


class PartFile:
    """A file written as `<final>.part` and renamed to `<final>` when complete.

    `open(resume_at)` keeps the first `resume_at` bytes of an existing part
    (what a previous attempt committed and heartbeated) and drops the rest,
    so a page written but not heartbeated before a crash is written again
    exactly once.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self._fh: BinaryIO | None = None

    def open(self, resume_at: int = 0) -> int:
        """Open for appending at `resume_at`; returns the offset actually kept (0 when the part is short)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        keep = 0
        if resume_at > 0 and self.part.exists() and self.part.stat().st_size >= resume_at:
            keep = resume_at
        self._fh = open(self.part, "r+b" if keep else "wb")
        self._fh.truncate(keep)
        self._fh.seek(keep)
        return keep

    def lines(self) -> Iterator[bytes]:
        """Lines of what is kept so far (for rebuilding counts on resume)."""
        with open(self.part, "rb") as fh:
            yield from fh

    def write(self, data: bytes) -> None:
        assert self._fh is not None
        self._fh.write(data)

    def flush(self) -> None:
        """Flush to the OS: what a heartbeat then claims survives a worker SIGKILL."""
        assert self._fh is not None
        self._fh.flush()

    def commit(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.part, self.final)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
