"""Manifests: a small text file beside published files, listing them; replaced whole, never seen half-written.

Both syncs keep one (the legacy sync's `manifest.json`, the segment export sync's `manifest.ndjson`),
and a file is listed there only after it is published complete: listed means complete and final.

Every update writes the whole new manifest as a new version of one object:
- local: `<name>.tmp-<random>`, fsync, `os.replace` over the old one, fsync of the directory: a
  reader sees the old manifest or the new one, never a torn one, even after a power cut;
- object stores: one PUT of the whole object. S3, GCS and Azure make an object
  visible only once its upload completes, so a reader (a warehouse loader) sees the old version or
  the new one. No append (S3 has none) and no part objects to stitch together.

Writers are serialized by the workflow that owns the manifest (one workflow per manifest: the
workflow id is derived from where it writes), so read-modify-write loses nothing; a late retry of
an older write is healed by the next write, which carries the recent entries again.
The cost is one rewrite of the whole file per update: ~250 bytes a line, so an hourly sync's
manifest grows by ~2 MiB a year, and each hour's update rewrites it (documented in the README).
"""

from __future__ import annotations

from activities.locations import Destination


class ManifestFile:
    """One manifest at a destination: `read()` (None when there is none yet) and `write(text)`.

    Reading, writing whole and sizing files are the destination's (activities/locations.py)."""

    def __init__(self, dest: Destination, name: str) -> None:
        self.dest = dest
        self.name = name
        self.local = dest.local / name
        self.location = dest.location(self.local)

    def read(self) -> str | None:
        return self.dest.read_text(self.name)

    def write(self, text: str) -> None:
        self.dest.write_atomic(self.name, text.encode())

    def size_of(self, file_name: str) -> int | None:
        """Size of a file beside the manifest (None when absent): a listed file is still there."""
        return self.dest.size_of(file_name)
