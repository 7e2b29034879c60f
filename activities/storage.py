"""Destinations: where collected records and downloads land.

A destination is a local path or a `file://` URL (default FULLSTORY_DATA_DIR).
Records are written to `<name>.part` and renamed to `<name>` only when
complete, so nothing partial is ever visible at a final name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from temporalio.exceptions import ApplicationError

UNSUPPORTED_DESTINATION = "UnsupportedDestination"
DESTINATION_NOT_WRITABLE = "DestinationNotWritable"

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_name(text: str, max_len: int = 120) -> str:
    """A file-name component from an id: no separators, no traversal, bounded length."""
    name = _UNSAFE.sub("_", text).strip("._") or "unnamed"
    return name[:max_len]


def resolve_local_destination(destination: str | None, default: str) -> Path:
    """The local directory for `destination` (created if needed), or a clear non-retryable error."""
    target = destination or default
    parts = urlsplit(target)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise ApplicationError(
            f"destination {target!r}: scheme {parts.scheme}:// is not supported here; use a local path or file://",
            type=UNSUPPORTED_DESTINATION,
            non_retryable=True,
        )
    else:
        path = Path(target)
    path = path.expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ApplicationError(
            f"destination {str(path)!r} cannot be created: {e.strerror}",
            type=DESTINATION_NOT_WRITABLE,
            non_retryable=True,
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ApplicationError(
            f"destination {str(path)!r} is not writable by the worker",
            type=DESTINATION_NOT_WRITABLE,
            non_retryable=True,
        )
    return path


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
        self._fh = None

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
