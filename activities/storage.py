"""Destinations: where collected records and downloads land.

A destination is a local path or a `file://` URL (default FULLSTORY_DATA_DIR),
or an object-store URL that fsspec knows (`s3://bucket/prefix`, `gs://`, ...).
Files are always written locally first, as `<name>.part`, renamed to `<name>`
only when complete; for an object store that complete file is then uploaded
(S3: one PUT or a multipart upload, visible only once committed) and the
local copy removed. So nothing partial is ever visible at a final name.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Destination:
    """Where files are built (`local`), and where they are published (`remote`, None for local ones)."""

    local: Path
    remote: str | None = None

    def location(self, path: Path) -> str:
        return str(path) if self.remote is None else f"{self.remote}/{path.relative_to(self.local).as_posix()}"


def is_object_store(destination: str | None) -> bool:
    scheme = urlsplit(destination or "").scheme
    return len(scheme) > 1 and scheme != "file"


def resolve_destination(destination: str | None, default: str) -> Destination:
    """Local destinations as they are; object stores get a local staging directory under the data dir."""
    if not is_object_store(destination):
        return Destination(resolve_local_destination(destination, default))
    assert destination is not None
    try:
        import fsspec

        fsspec.get_filesystem_class(urlsplit(destination).scheme)
    except (ImportError, ValueError) as e:
        raise ApplicationError(f"destination {destination!r}: no filesystem for it ({e})",
                               type=UNSUPPORTED_DESTINATION, non_retryable=True) from None
    key = hashlib.sha256(destination.encode()).hexdigest()[:16]
    staging = resolve_local_destination(str(Path(default) / ".staging" / key), default)
    return Destination(staging, destination.rstrip("/"))


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
        raise ApplicationError(f"destination {dest.remote!r}: cannot write {target}: {e}",
                               type=DESTINATION_NOT_WRITABLE, non_retryable=True) from None
    path.unlink()
    return target


def resolve_local_destination(destination: str | None, default: str) -> Path:
    """The local directory for `destination` (created if needed), or a clear non-retryable error."""
    target = destination or default
    parts = urlsplit(target)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise ApplicationError(
            f"destination {target!r}: scheme {parts.scheme}:// is not a local path; use a local path or file://",
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
