"""How much of a part file is good: the truth a new attempt resumes from (not the last heartbeat).

Beside each part, `<part>.journal` holds JSON lines, each a state of the part
that is complete on disk (a download: its length; a page walk: the end of a
whole page, its record count and the next page token), stamped with the
machine's boot id, and `synced` when the part was fsynced up to it first.

Which bytes a new attempt may trust:
- written in this same boot of this machine (a worker SIGKILLed, OOM-killed,
  redeployed: the commonest death): every byte the dead process handed to the
  OS is in the page cache and is good, fsynced or not. A download keeps the
  whole part; a page walk keeps every page whose journal line was written.
- written before a reboot or on another machine (a shared volume): only what
  was fsynced, i.e. up to the last `synced` line. Parts are fsynced every
  SYNC_BYTES or SYNC_SECONDS, so a power cut costs at most that much.
A torn last line (killed mid-append) is not JSON and is skipped. A new attempt
starts its journal afresh with one synced line (`restart`), so lines of an
older attempt or boot never mix with its own.

`lock()` holds the part (flock) for the attempt: an earlier attempt whose
heartbeat timed out while its worker lives on (stalled, not dead) stops at its
next heartbeat; until it has, the new one waits rather than write beside it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

SYNC_BYTES = 16 << 20  # fsync a download's part at least this often...
SYNC_SECONDS = 2.0  # ...and any part with unsynced bytes this long after the last fsync
LOCK_WAIT_SECONDS = 10.0  # an earlier attempt still writing stops at its next heartbeat (~1 s)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: a per-process id, so only fsynced states are ever trusted
        return f"process-{uuid.uuid4()}"


BOOT_ID = _boot_id()


def fsync_path(path: Path) -> None:
    """fsync a file by name (Linux flushes the file's dirty pages whichever descriptor asks)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    def __init__(self, part: Path) -> None:
        self.part = part
        self.path = part.with_name(part.name + ".journal")
        self.last_sync = time.monotonic()
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Hold the part (creating it if missing) for this attempt; blocks up to LOCK_WAIT_SECONDS."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(
                        f"{self.part.name} is still being written by an earlier attempt on this machine; will retry"
                    ) from None
                time.sleep(0.1)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def exists(self) -> bool:
        return self.path.exists()

    def states(self) -> list[dict[str, Any]]:
        """Every readable line, oldest first."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in raw.split(b"\n")[:-1]:  # the text after the last newline is a torn append
            try:
                state = json.loads(line)
            except ValueError:
                continue
            if isinstance(state, dict) and isinstance(state.get("bytes"), int):
                out.append(state)
        return out

    def trusted(self) -> tuple[dict[str, Any], bool] | None:
        """The latest state this attempt may resume from, and whether it was written in this boot.

        None: no journal (a part from before journals, or none at all). A state past the part's end
        (a reboot lost the tail) is never trusted.
        """
        states = self.states()
        if not states and not self.exists():
            return None
        size = self.part.stat().st_size if self.part.exists() else 0
        for state in reversed(states):
            same_boot = state.get("boot") == BOOT_ID
            if (same_boot or state.get("synced")) and state["bytes"] <= size:
                return state, same_boot
        return {"bytes": 0}, False

    def restart(self, state: dict[str, Any]) -> None:
        """Start this attempt's journal: fsync the part (its kept bytes), then one synced line, atomically."""
        if self.part.exists():
            fsync_path(self.part)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(self._line(state, synced=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the journal's name survives a power cut too
        finally:
            os.close(fd)
        self.last_sync = time.monotonic()

    def append(self, state: dict[str, Any], *, sync: bool = False) -> None:
        """Record a state the part now holds (its bytes handed to the OS); with sync, fsync the part first."""
        if sync:
            fsync_path(self.part)
        with open(self.path, "ab") as fh:
            fh.write(self._line(state, synced=sync))
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        if sync:
            self.last_sync = time.monotonic()

    def sync_due(self) -> bool:
        return time.monotonic() - self.last_sync >= SYNC_SECONDS

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @staticmethod
    def _line(state: dict[str, Any], synced: bool) -> bytes:
        return json.dumps({**state, "boot": BOOT_ID, "synced": synced}, separators=(",", ":")).encode() + b"\n"
