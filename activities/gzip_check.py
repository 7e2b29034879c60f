"""Gzip integrity checked while the bytes stream in, on its own thread.

Decompresses and discards, member after member (a concatenation of gzip
members is a valid gzip file). Uses the fastest inflater that is installed:
ISA-L (`isal`), else zlib-ng, else the standard zlib; all release the GIL,
so the check runs beside the download instead of after it.
"""

from __future__ import annotations

import queue
import threading

try:
    from isal import isal_zlib as _zlib

    LIBRARY = "isal"
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from zlib_ng import zlib_ng as _zlib

        LIBRARY = "zlib-ng"
    except ImportError:
        import zlib as _zlib

        LIBRARY = "zlib"

GZIP_WBITS = 31
_DONE = object()


class GzipCorrupt(Exception):
    """The bytes are not a complete, valid gzip stream."""


class GzipChecker:
    """Synchronous core: `feed(chunk)` repeatedly, then `finish()`; raises GzipCorrupt."""

    library = LIBRARY

    def __init__(self) -> None:
        self._d = _zlib.decompressobj(GZIP_WBITS)
        self.compressed = 0
        self.members = 1

    def feed(self, chunk: bytes) -> None:
        self.compressed += len(chunk)
        data = chunk
        while data:
            try:
                # Bounded output per call keeps memory flat on highly compressible data.
                self._d.decompress(data, 8 << 20)
                while self._d.unconsumed_tail and not self._d.eof:
                    self._d.decompress(self._d.unconsumed_tail, 8 << 20)
            except _zlib.error as e:
                raise GzipCorrupt(f"gzip data is corrupt at about byte {self.compressed}: {e}") from None
            if self._d.eof and self._d.unused_data:
                data = self._d.unused_data  # the next member starts here
                self._d = _zlib.decompressobj(GZIP_WBITS)
                self.members += 1
            else:
                data = b""

    def finish(self) -> None:
        if not self._d.eof:
            raise GzipCorrupt(f"gzip stream is truncated after {self.compressed} bytes (member {self.members} has no end)")


class ThreadedGzipChecker:
    """Runs a GzipChecker on a thread fed through a bounded queue (flat memory)."""

    library = LIBRARY

    def __init__(self, max_chunks: int = 8) -> None:
        self._checker = GzipChecker()
        self._queue: queue.Queue = queue.Queue(max_chunks)
        self._error: GzipCorrupt | None = None
        self._thread = threading.Thread(target=self._run, name="gzip-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self._checker.feed(chunk)
                except GzipCorrupt as e:
                    self._error = e

    def feed(self, chunk: bytes) -> None:
        """Blocks when the checker is behind: call it from a worker thread, not the event loop."""
        if self._error is None:
            self._queue.put(chunk)

    def finish(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._checker.finish()

    def abandon(self) -> None:
        self._error = self._error or GzipCorrupt("abandoned")
        self._queue.put(_DONE)
        self._thread.join()
