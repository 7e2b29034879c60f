"""Locations: every place a workflow reads or writes, resolved one way and checked against the allow-list.

A location is a local path, a `file://` URL, or an object-store URL that fsspec knows
(`s3://bucket/prefix`, `gs://...`). It must lie inside FULLSTORY_ALLOWED_LOCATIONS: local roots
(a path is resolved first, so `..` and symlinks cannot lead out of a root) and URL prefixes
(matched on whole path segments: `s3://b/exports` allows `s3://b/exports/x`, not `s3://b/exports2`).
Anything else fails with InvalidInput naming the setting, before any call to Fullstory.

The default keeps `make run` and the README working without opening the worker's whole disk:
FULLSTORY_DATA_DIR, and the object stores (whose reach the worker's own cloud credentials already
bound). Never other local paths, and never other fsspec protocols (`http://`, `memory://`, ...).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

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


@dataclass(frozen=True)
class Destination:
    """Where files are built (`local`), and where they are published (`remote`, None for local ones)."""

    local: Path
    remote: str | None = None

    def location(self, path: Path) -> str:
        return str(path) if self.remote is None else f"{self.remote}/{path.relative_to(self.local).as_posix()}"


@dataclass(frozen=True)
class Source:
    """Something to read: a local file (`path`), or an object-store URL (`url`)."""

    path: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.path is not None else str(self.url)


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
        """Where to read from: a local file, or an object-store URL."""
        resolved = self._check(location, field)
        if isinstance(resolved, Path):
            return Source(path=resolved)
        _filesystem_for(resolved, field)
        return Source(url=resolved)


def _under(location: str, prefix: str) -> bool:
    """`location` is `prefix` or below it, on whole path segments (`s3://` alone allows every bucket)."""
    if prefix.endswith("://"):
        return location.startswith(prefix)
    prefix, location = prefix.rstrip("/"), location.rstrip("/")
    return location == prefix or location.startswith(prefix + "/")


def _filesystem_for(url: str, field: str) -> None:
    try:
        import fsspec

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
