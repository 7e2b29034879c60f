"""Locations: every place a workflow reads or writes, resolved one way, checked against the allow-list,
and opened, read, written and published here (the one module that speaks fsspec).

A location is a local path, a `file://` URL, or an object-store URL that fsspec knows
(`s3://bucket/prefix`, `gs://...`). It must lie inside FULLSTORY_ALLOWED_LOCATIONS: local roots
(a path is resolved first, so `..` and symlinks cannot lead out of a root) and URL prefixes
(matched on whole path segments: `s3://b/exports` allows `s3://b/exports/x`, not `s3://b/exports2`).
Anything else fails with InvalidInput naming the setting, before any call to Fullstory.

The default keeps `make run` and the README working without opening the worker's whole disk:
FULLSTORY_DATA_DIR, and the object stores (whose reach the worker's own cloud credentials already
bound). Never other local paths, and never other fsspec protocols (`http://`, `memory://`, ...).

Nothing partial is ever visible at a final name. Files are built locally first (`PartFile`: written
as `<name>.part`, renamed to `<name>` only when complete); for an object store that complete file is
then uploaded by `Destination.publish` (S3: one PUT or a multipart upload, visible only once committed)
and the local copy removed. Small files replaced whole (manifests, staged inputs) go through
`Destination.write_atomic`: locally `<name>.tmp-<random>`, fsync, `os.replace`, fsync of the directory;
in an object store one PUT of the whole object.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel
from temporalio import activity

from vocabulary import errors

SETTING = "FULLSTORY_ALLOWED_LOCATIONS"
OBJECT_STORES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://")
DEFAULT_ALLOWED = ("FULLSTORY_DATA_DIR", *OBJECT_STORES)  # FULLSTORY_DATA_DIR: the setting's value


def scheme_of(location: str) -> str:
    """The URL scheme, or "" for a local path (one letter is a Windows drive, not a scheme)."""
    scheme = urlsplit(location).scheme
    return scheme if len(scheme) > 1 else ""


def local_path(location: str) -> Path:
    """A local path or file:// URL as an absolute path: `..` removed, symlinks followed."""
    path = Path(unquote(urlsplit(location).path)) if scheme_of(location) == "file" else Path(location)
    return path.expanduser().resolve()


def _filesystem(location: str) -> tuple[Any, str]:
    """The fsspec filesystem and path for a resolved location (a local path is taken as it is, never parsed)."""
    if scheme_of(location) == "":
        return LocalFileSystem(), location
    fs, path = fsspec.core.url_to_fs(location)
    fs.invalidate_cache()  # another worker may have written it: never trust a listing cache
    return fs, path


# --- Reading --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Something to read, allowed and resolved: an absolute local path or an object-store URL."""

    location: str

    def describe(self) -> str:
        return self.location

    def local_path(self) -> Path | None:
        """The file's path when it is local (a reader may open it itself), else None."""
        return Path(self.location) if scheme_of(self.location) == "" else None

    def open(self) -> IO[bytes]:
        """The raw bytes, seekable (FileNotFoundError when there is nothing there)."""
        fs, path = _filesystem(self.location)
        fh: IO[bytes] = fs.open(path, "rb")
        return fh

    def size(self) -> int:
        with self.open() as fh:
            return fh.seek(0, io.SEEK_END)

    async def pieces(self, piece: int = 1 << 20) -> AsyncIterator[bytes]:
        """The bytes a piece at a time, read off the event loop: a request body streamed from the file."""
        fh = await asyncio.to_thread(self.open)
        try:
            while data := await asyncio.to_thread(fh.read, piece):
                yield data
        finally:
            fh.close()


# --- Writing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """Where files are built (`local`), and where they are published (`remote`, None for local ones)."""

    local: Path
    remote: str | None = None

    def location(self, path: Path) -> str:
        """Where a file built at `path` (under `local`) is seen once published."""
        return str(path) if self.remote is None else f"{self.remote}/{path.relative_to(self.local).as_posix()}"

    async def publish(self, path: Path) -> str:
        """Make a complete local file visible at the destination; returns its location."""
        if self.remote is None:
            return str(path)
        target = self.location(path)
        fs, remote_path = _filesystem(target)
        try:
            await asyncio.to_thread(fs.put_file, str(path), remote_path)
        except (PermissionError, FileNotFoundError) as e:
            raise errors.DESTINATION_NOT_WRITABLE(f"destination {self.remote!r}: cannot write {target}: {e}") from None
        path.unlink()
        return target

    def read_text(self, name: str) -> str | None:
        """The published file `name` (a path relative to the destination), or None when there is none."""
        where = self.location(self.local / name)
        if self.remote is None:
            try:
                return Path(where).read_text()
            except FileNotFoundError:
                return None
        fs, path = _filesystem(where)
        try:
            return bytes(fs.cat_file(path)).decode()
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise errors.DESTINATION_NOT_WRITABLE(f"cannot read {where}: {e}") from None

    def write_atomic(self, name: str, data: bytes) -> str:
        """Replace the file `name` whole (readers see the old version or the new one); returns its location."""
        where = self.location(self.local / name)
        if self.remote is None:
            Path(where).parent.mkdir(parents=True, exist_ok=True)
            write_local_atomic(Path(where), data)
            return where
        fs, path = _filesystem(where)
        try:
            fs.pipe_file(path, data)  # one PUT: visible whole or not at all
        except (PermissionError, FileNotFoundError) as e:
            raise errors.DESTINATION_NOT_WRITABLE(f"cannot write {where}: {e}") from None
        return where

    def remove_matching(self, pattern: str, keep: set[str]) -> list[str]:
        """Remove the published files matching the glob `pattern` (relative to the destination), but those
        named in `keep` (relative too); returns what it removed."""
        where = self.location(self.local / pattern)
        fs, path = _filesystem(where)
        base = path[: -len(pattern)] if path.endswith(pattern) else path
        removed = []
        for found in fs.glob(path):
            relative = found[len(base) :] if found.startswith(base) else found
            if relative.lstrip("/") not in keep:
                fs.rm_file(found)
                removed.append(relative.lstrip("/"))
        return removed

    def size_of(self, name: str) -> int | None:
        """Size of the published file `name` (None when absent)."""
        where = self.location(self.local / name)
        if self.remote is None:
            local = Path(where)
            return local.stat().st_size if local.exists() else None
        fs, path = _filesystem(where)
        try:
            return int(fs.info(path)["size"])
        except FileNotFoundError:
            return None


def write_local_atomic(path: Path, data: bytes) -> None:
    """`<name>.tmp-<random>`, fsync, `os.replace`, fsync of the directory: whole even after a power cut."""
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


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_name(text: str, max_len: int = 120) -> str:
    """A file-name component from an id: no separators, no traversal, bounded length."""
    name = _UNSAFE.sub("_", text).strip("._") or "unnamed"
    return name[:max_len]


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


# --- The allow-list ---------------------------------------------------------------------------------------


class Locations:
    """The worker's allow-list and default destination; one per worker process."""

    def __init__(self, data_dir: str, allowed: str | None = None) -> None:
        self.data_dir = data_dir
        entries = [e.strip() for e in (allowed if allowed else ",".join(DEFAULT_ALLOWED)).split(",") if e.strip()]
        entries = [data_dir if e == "FULLSTORY_DATA_DIR" else e for e in entries]
        self.roots = tuple(dict.fromkeys(local_path(e) for e in entries if scheme_of(e) in ("", "file")))
        self.prefixes = tuple(dict.fromkeys(e for e in entries if scheme_of(e) not in ("", "file")))

    def describe(self) -> str:
        return ", ".join([*map(str, self.roots), *self.prefixes]) or "nothing"

    def _check(self, location: str, field: str) -> str | Path:
        """The location, resolved (a Path for local ones), or InvalidInput when it is not allowed."""
        scheme = scheme_of(location)
        if scheme in ("", "file"):
            path = local_path(location)
            if any(path == root or path.is_relative_to(root) for root in self.roots):
                return path
            shown = str(path)
        else:
            parts = urlsplit(location)
            if ".." not in parts.path.split("/") and any(_under(location, p) for p in self.prefixes):
                return location.rstrip("/")
            shown = location
        raise errors.INVALID_INPUT(
            f"{field} {shown!r} is outside {SETTING} ({self.describe()}): "
            f"choose a location inside them, or ask the operator to add it to {SETTING}"
        )

    def check(self, location: str | None, field: str) -> None:
        """The allow-list and the scheme, no I/O: the check a workflow makes before its first call to Fullstory."""
        if location is not None and isinstance(resolved := self._check(location, field), str):
            _filesystem_for(resolved, field)

    def destination(self, location: str | None, field: str = "destination") -> Destination:
        """Where to write: a local directory (created), or an object store with local staging under the data dir."""
        resolved = self._check(location or self.data_dir, field)
        if isinstance(resolved, Path):
            return Destination(_make_dir(resolved, field))
        _filesystem_for(resolved, field)
        key = hashlib.sha256(resolved.encode()).hexdigest()[:16]
        return Destination(_make_dir(local_path(self.data_dir) / ".staging" / key, "FULLSTORY_DATA_DIR"), resolved)

    def source(self, location: str, field: str) -> Source:
        """Where to read from: a local file (its resolved path), or an object-store URL."""
        resolved = self._check(location, field)
        if isinstance(resolved, str):
            _filesystem_for(resolved, field)
        return Source(str(resolved))


def _under(location: str, prefix: str) -> bool:
    """`location` is `prefix` or below it, on whole path segments (`s3://` alone allows every bucket)."""
    if prefix.endswith("://"):
        return location.startswith(prefix)
    prefix, location = prefix.rstrip("/"), location.rstrip("/")
    return location == prefix or location.startswith(prefix + "/")


def _filesystem_for(url: str, field: str) -> None:
    try:
        fsspec.get_filesystem_class(scheme_of(url))
    except (ImportError, ValueError) as e:
        raise errors.UNSUPPORTED_DESTINATION(f"{field} {url!r}: no filesystem for it ({e})") from None


def _make_dir(path: Path, field: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise errors.DESTINATION_NOT_WRITABLE(f"{field} {str(path)!r} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise errors.DESTINATION_NOT_WRITABLE(f"{field} {str(path)!r} is not writable by the worker")
    return path


# --- The check a workflow makes before its first call to Fullstory ------------------------------------------


class CheckLocationsParams(BaseModel):
    locations: dict[str, str]  # input field name -> the location it names


class HasLocations(Protocol):
    """What LocationActivities needs of activities/deps.py's ActivityDeps."""

    @property
    def locations(self) -> Locations: ...


class LocationActivities:
    def __init__(self, deps: HasLocations) -> None:
        self.locations = deps.locations

    @activity.defn(name="check_locations")
    async def check_locations(self, params: CheckLocationsParams) -> None:
        """Fail at once (InvalidInput, UnsupportedDestination) on a location this worker may not use."""
        for field, location in params.locations.items():
            self.locations.check(location, field)
