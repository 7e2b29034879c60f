"""Where a download's bytes go: the part file, its journal, the hash and the gzip check, the final name.

- bytes go to `<dir>/.<workflow>-<activity>.part` on one writer thread, in order, unbuffered (every
  byte written is in the OS when the worker is killed); each is hashed and fed to the gzip check
  (gzip_check.py, a child process); the part is fsynced every SYNC_BYTES / SYNC_SECONDS and its
  journal (journal.py) says so;
- a new attempt keeps what the journal says is good on disk (`resume_point`: after a worker kill,
  every byte written; after a reboot, up to the last fsync), and re-hashes (and re-checks) it first;
- a part that is not a valid gzip, or that no retry will resume, is deleted; any other failure
  leaves it for the next attempt;
- at the end: fsync, then an atomic rename to the final name, which never replaces a different file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from activities.gzip_check import GzipCorrupt, start_checker
from activities.journal import SYNC_BYTES, Journal
from activities.locations import safe_name
from vocabulary import errors

CHUNK = 1 << 20


class DownloadCursor(BaseModel):
    """Heartbeat: where the part is and how much of it is on disk (progress; a part without a journal,
    left by an older version, resumes from it)."""

    part: str
    bytes_done: int = 0


def resume_point(part: Path, cursor: DownloadCursor | None) -> int:
    """Bytes of `part` a new attempt keeps: what its journal says is good on disk.

    Written in this boot (a worker killed, the machine up): every byte in the part. Else (a reboot,
    or a part on a volume shared with another machine): up to the last fsync. A part without a
    journal (written by an older version) is trusted up to its last heartbeat, as it was then.
    """
    found = Journal(part).trusted()
    if found is not None:
        state, same_boot = found
        return part.stat().st_size if same_boot and part.exists() else state["bytes"]
    if cursor is not None and cursor.part == str(part) and part.exists() and part.stat().st_size >= cursor.bytes_done:
        return cursor.bytes_done
    return 0


class Sink:
    """File writes, sha256 and gzip feeding; runs on the download's writer thread, one chunk at a time, in order."""

    def __init__(self, part: Path, keep: int, verify_gzip: bool) -> None:
        self.part = part
        self.verify_gzip = verify_gzip
        self.journal = Journal(part)
        self.journal.lock()  # before anything is read or written (an earlier attempt may live on)
        keep = min(keep, part.stat().st_size) if keep and part.exists() else 0  # never pad a short part
        self.sha = hashlib.sha256()
        self.checker = start_checker() if verify_gzip else None
        # Unbuffered: every byte written is in the OS when the worker is killed (the journal counts on it).
        self.fh = open(part, "r+b" if keep else "wb", buffering=0)
        self.fh.truncate(keep)
        # Resuming: the hash and the gzip check must see the bytes already on disk first (measured:
        # see bench/bench_kill_resume.py --reread; the gzip check dominates, sha256 alone is ~1.5 GB/s).
        started = time.monotonic()
        self.size = 0
        while self.size < keep and (chunk := self.fh.read(min(CHUNK, keep - self.size))):
            self._digest(chunk)
            self.size += len(chunk)
        self.reread_seconds = time.monotonic() - started
        self.fh.seek(self.size)
        self.journal.restart({"bytes": self.size})
        self.synced = self.size

    def _digest(self, chunk: bytes) -> None:
        self.sha.update(chunk)  # SHA-NI: ~2 GB/s, releases the GIL; measured no faster on a thread of its own
        if self.checker is not None:
            self.checker.feed(chunk)

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self._digest(chunk)
        self.size += len(chunk)
        if self.size - self.synced >= SYNC_BYTES or self.journal.sync_due():
            self.journal.append({"bytes": self.size}, sync=True)  # the floor after a reboot
            self.synced = self.size

    def restart(self) -> None:
        """The server ignored Range (or the part was longer than the file): start file, hash and check over."""
        if self.checker is not None:
            self.checker.abandon()
        self.checker = start_checker() if self.verify_gzip else None
        self.sha = hashlib.sha256()
        self.fh.seek(0)
        self.fh.truncate(0)
        self.size = 0
        self.journal.restart({"bytes": 0})
        self.synced = 0

    def finish(self) -> None:
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.journal.unlock()
        if self.checker is not None:
            self.checker.finish()

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.journal.unlock()
        if self.checker is not None:
            self.checker.abandon()


@dataclass
class PartWriter:
    """The sink as the event loop sees it: chunks handed to its writer thread, which keeps them in order."""

    sink: Sink
    thread: ThreadPoolExecutor

    @property
    def size(self) -> int:
        return self.sink.size

    def submit(self, chunk: bytes) -> Future:
        return self.thread.submit(self.sink.write, chunk)

    async def restart(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self.sink.restart)


@asynccontextmanager
async def writing_part(part: Path, keep: int, verify_gzip: bool, what: str) -> AsyncIterator[PartWriter]:
    """The part open for one attempt, keeping its first `keep` bytes; fsynced and closed when the block ends.

    A part that is not a valid gzip (DownloadCorrupt), or that no retry will resume, is deleted; after
    any other failure it is closed and left for the next attempt.
    """
    thread = ThreadPoolExecutor(1, thread_name_prefix="download-writer")  # one thread: writes stay in order
    loop = asyncio.get_running_loop()
    sink: Sink | None = None
    try:
        sink = await loop.run_in_executor(thread, Sink, part, keep, verify_gzip)
        yield PartWriter(sink, thread)
        await loop.run_in_executor(thread, sink.finish)
    except GzipCorrupt as e:
        await _discard(loop, thread, sink, part)  # never keep or resume from bytes that do not inflate
        raise errors.DOWNLOAD_CORRUPT(f"download of {what} is not a valid gzip: {e}") from None
    except ApplicationError as e:
        if e.non_retryable:
            await _discard(loop, thread, sink, part)  # no retry will resume it
        elif sink is not None:
            await loop.run_in_executor(thread, sink.close)
        raise
    except BaseException:
        if sink is not None:
            sink.close()  # also on cancellation: the writer thread is idle (pump waited for it)
        raise
    finally:
        thread.shutdown(wait=False)


async def _discard(loop: asyncio.AbstractEventLoop, writer: ThreadPoolExecutor, sink: Sink | None, part: Path) -> None:
    if sink is not None:
        await loop.run_in_executor(writer, sink.close)
    part.unlink(missing_ok=True)
    Journal(part).remove()


def sanitize_filename(name: str | None, default: str) -> str:
    """A bare, safe file name: no directories, no traversal, no absolute paths, no control characters."""
    if not name:
        return default
    base = re.split(r"[\\/]", name.strip())[-1]
    base = safe_name(base.lstrip("."), max_len=150)
    return default if base in ("", "unnamed") else base


def commit_part(part: Path, directory: Path, wanted: str, tag: str, size: int, sha256: str, overwrite: bool) -> Path:
    """Rename the complete part to its final name (atomic); never over a different file unless the caller named it."""
    final = directory / wanted
    if not overwrite:
        stem, dot, ext = wanted.partition(".")
        n = 1
        while final.exists() and not _same_file(final, size, sha256):
            # Two exports served under one name ("export.ndjson.gz"): keep both.
            final = directory / f"{stem}-{tag}{'' if n == 1 else f'-{n}'}{dot}{ext}"
            n += 1
    os.replace(part, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)
    return final


def _same_file(path: Path, size: int, sha256: str) -> bool:
    """The same bytes already stored (an earlier attempt renamed it, then died): replace it, no duplicate."""
    if path.stat().st_size != size:
        return False
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest() == sha256
