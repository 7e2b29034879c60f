"""Manifests: a small text file beside published files, listing them; replaced whole, never seen half-written.

Both syncs keep one (the legacy sync's `manifest.json`, the segment export sync's `manifest.ndjson`),
and a file is listed there only after it is published complete: listed means complete and final.

Every update writes the whole new manifest as a new version of one object:
- local: `<name>.tmp-<random>`, fsync, `os.replace` over the old one, fsync of the directory: a
  reader sees the old manifest or the new one, never a torn one, even after a power cut;
- object stores: one PUT of the whole object (`fs.pipe_file`). S3, GCS and Azure make an object
  visible only once its upload completes, so a reader (a warehouse loader) sees the old version or
  the new one. No append (S3 has none) and no part objects to stitch together.

Writers are serialized by the workflow that owns the manifest (one workflow per manifest: the
workflow id is derived from where it writes), so read-modify-write loses nothing; a late retry of
an older write is healed by the next write, which carries the recent entries again.
The cost is one rewrite of the whole file per update: ~250 bytes a line, so an hourly sync's
manifest grows by ~2 MiB a year, and each hour's update rewrites it (documented in the README).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from activities.locations import Destination
from vocabulary import errors


class ManifestFile:
    """One manifest at a destination: `read()` (None when there is none yet) and `write(text)`."""

    def __init__(self, dest: Destination, name: str) -> None:
        self.dest = dest
        self.name = name
        self.local = dest.local / name
        self.location = str(self.local) if dest.remote is None else f"{dest.remote}/{name}"

    def read(self) -> str | None:
        if self.dest.remote is None:
            try:
                return self.local.read_text()
            except FileNotFoundError:
                return None
        fs, path = _fs(self.location)
        try:
            return fs.cat_file(path).decode()
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise errors.DESTINATION_NOT_WRITABLE(f"cannot read {self.location}: {e}") from None

    def write(self, text: str) -> None:
        data = text.encode()
        if self.dest.remote is None:
            write_local_atomic(self.local, data)
            return
        fs, path = _fs(self.location)
        try:
            fs.pipe_file(path, data)  # one PUT: visible whole or not at all
        except (PermissionError, FileNotFoundError) as e:
            raise errors.DESTINATION_NOT_WRITABLE(f"cannot write {self.location}: {e}") from None

    def size_of(self, file_name: str) -> int | None:
        """Size of a file beside the manifest (None when absent): a listed file is still there."""
        if self.dest.remote is None:
            local = self.local.parent / file_name
            return local.stat().st_size if local.exists() else None
        fs, path = _fs(f"{self.dest.remote}/{file_name}")
        try:
            return int(fs.info(path)["size"])
        except FileNotFoundError:
            return None


def write_local_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()  # another worker may have written it: never trust a listing cache
    return fs, path
