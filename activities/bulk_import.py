"""Bulk import activities: read a big source of items once, stage it in chunks, merge the chunks' records.

- `stage_bulk_source`: stream the source (local path, file:// or an object-store URL; NDJSON or a JSON array;
  gzip by suffix or magic bytes) once, never whole in memory, validating every item, into chunk files
  `chunk-NNNNN.json` (`{"requests": [...], "shared": ..., "lines": [...]}`) under the destination, where
  every worker can read them (an object-store destination: uploaded beside the results). Deterministic:
  a new attempt after a crash writes the very same chunks, so a child's Idempotency-Key always comes
  with an identical body.
- `merge_bulk_records`: one NDJSON of every chunk's error records (each with its `batch` and source
  `line`), the same for imports when asked, and `batches.ndjson` (one line per batch result, read from
  the child workflows' results in Temporal). Rebuilt from the start on a new attempt: nothing twice.

`read_items` is also what `requests_url` of a single batch reads (activities/batch_job.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import WorkflowFailureError

from activities.heartbeat import Heartbeater
from activities.locations import Destination, Locations, PartFile, Source, safe_name
from vocabulary import errors
from vocabulary.contract import BatchKind

if TYPE_CHECKING:
    from activities.deps import ActivityDeps

READ_BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


# --- Reading a source of items -------------------------------------------------------------------------


def open_source(source: Source) -> IO[bytes]:
    """The source's bytes, gunzipped when its name ends in .gz or it starts with gzip's magic bytes."""
    raw = source.open()
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC or source.location.endswith(".gz"):
        from isal import igzip

        return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def read_items(source: Source, field: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, JSON text, item) per item: NDJSON (blank lines skipped) or one JSON array.

    InvalidInput, naming the line, for anything that is not a JSON object; unreadable: InvalidInput.
    """
    where = source.describe()
    try:
        with open_source(source) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="\n")
            number, head = 0, ""
            while True:
                piece = text.readline(READ_BLOCK)  # bounded: a one-line array is read a block at a time
                if not piece:
                    return
                number += 1
                if piece.strip():
                    head = piece
                    break
            if head.lstrip().startswith("["):
                yield from _array_items(text, head, number, where, field)
            else:
                if not head.endswith("\n"):
                    head += text.readline()
                yield from _ndjson_items(head, number, text, where, field)
    except FileNotFoundError:
        raise errors.INVALID_INPUT(f"{field} {where!r}: no such file") from None
    except UnicodeDecodeError as e:
        raise errors.INVALID_INPUT(f"{field} {where!r}: not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError) as e:
        raise errors.INVALID_INPUT(f"{field} {where!r}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def _ndjson_items(
    head: str, number: int, text: io.TextIOWrapper, where: str, field: str
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    line = head
    while line:
        stripped = line.strip()
        if stripped:
            try:
                item = json.loads(stripped)
            except json.JSONDecodeError as e:
                raise errors.INVALID_INPUT(f"{field} {where!r} line {number}: not valid JSON ({e.msg})") from None
            if not isinstance(item, dict):
                raise errors.INVALID_INPUT(
                    f"{field} {where!r} line {number}: an item must be a JSON object, not {_json_type(item)}"
                )
            yield number, stripped, item
        number += 1
        line = text.readline()


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _array_items(
    text: io.TextIOWrapper, head: str, line: int, where: str, field: str
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Items of one JSON array, decoded incrementally (a block at a time), with the line each starts on."""
    decoder = json.JSONDecoder()
    start = head.index("[")
    buf, pos, eof = head, start + 1, False

    def more() -> bool:
        nonlocal buf, pos, eof
        block = text.read(READ_BLOCK)
        if not block:
            eof = True
            return False
        buf = buf[pos:] + block
        pos = 0
        return True

    def skip_ws() -> str:
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return ""

    def bad(what: str) -> errors.ApplicationError:
        return errors.INVALID_INPUT(f"{field} {where!r} line {line}: {what}")

    expect_item, first = True, True
    while True:
        c = skip_ws()
        if c == "":
            raise bad("the JSON array is not closed")
        if c == "]" and (first or not expect_item):
            return
        if not expect_item:
            if c != ",":
                raise bad(f"expected ',' or ']' between items, found {c!r}")
            pos += 1
            expect_item = True
            continue
        while True:
            try:
                item, end = decoder.raw_decode(buf, pos)
                if end == len(buf) and not eof and not isinstance(item, (dict, list, str)):
                    raise json.JSONDecodeError("number may continue", buf, pos)  # a number cut by the block
                break
            except json.JSONDecodeError as e:
                if eof or not more():
                    raise bad(f"not valid JSON ({e.msg})") from None
        if not isinstance(item, dict):
            raise bad(f"an item must be a JSON object, not {_json_type(item)}")
        raw = buf[pos:end]
        yield line, json.dumps(item, separators=(",", ":"), ensure_ascii=False), item
        line += raw.count("\n")
        pos = end
        expect_item, first = False, False


# --- Params and results ------------------------------------------------------------------------------


class StageBulkSourceParams(BaseModel):
    kind: BatchKind
    source: str
    shared: dict[str, Any] | None = None
    batch_size: int
    destination: str | None = None
    name: str  # the bulk import's folder under the destination (from its workflow id)


class StagedSource(BaseModel):
    items: int
    batches: int
    chunks_location: str  # chunk i is f"{chunks_location}/chunk-{i:05d}.json"
    batches_destination: str  # where each child writes its records
    folder_location: str  # the merged reports go here


class MergeBulkRecordsParams(BaseModel):
    kind: BatchKind
    parent_workflow_id: str
    batches: int
    chunks_location: str
    destination: str | None = None
    name: str
    collect_imports: bool = False


class MergedRecords(BaseModel):
    errors_location: str
    imports_location: str | None = None
    batches_location: str
    errors: int
    imports: int
    unmatched: int = 0  # error records whose item was not found in its chunk (line unknown)


class StageProgress(BaseModel):
    items: int = 0
    batches: int = 0


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.json"


def child_workflow_id(parent_workflow_id: str, index: int) -> str:
    """A chunk's BatchImportWorkflow id: stable, so its Idempotency-Key survives any crash or continue-as-new."""
    return f"{parent_workflow_id}-batch-{index:05d}"


def _write_chunk(path: Path, texts: list[str], lines: list[int], shared: dict[str, Any] | None) -> None:
    part = PartFile(path)
    part.open(0)
    try:
        part.write(b'{"requests":[')
        part.write(",".join(texts).encode())
        part.write(b"]")
        if shared is not None:
            part.write(b',"shared":' + json.dumps(shared, separators=(",", ":")).encode())
        part.write(b',"lines":' + json.dumps(lines, separators=(",", ":")).encode() + b"}")
        part.commit()
    finally:
        part.close()


def _read_location(locations: Locations, location: str, field: str) -> bytes:
    with locations.source(location, field).open() as fh:
        return fh.read()


def _lines_of(locations: Locations, location: str, field: str) -> Iterator[bytes]:
    with locations.source(location, field).open() as fh:
        yield from fh


def canonical(item: Any) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class BulkActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.locations = deps.locations

    def _folder(self, destination: str | None, name: str) -> tuple[Destination, Path]:
        dest = self.locations.destination(destination)
        folder = dest.local / safe_name(name, 200)
        folder.mkdir(parents=True, exist_ok=True)
        return dest, folder

    @activity.defn(name="stage_bulk_source")
    async def stage_bulk_source(self, params: StageBulkSourceParams) -> StagedSource:
        source = self.locations.source(params.source, "source")
        dest, folder = self._folder(params.destination, params.name)
        chunks = folder / "chunks"
        chunks.mkdir(exist_ok=True)
        progress = StageProgress()
        loop = asyncio.get_running_loop()
        uploads: list[concurrent.futures.Future[str]] = []

        def stage() -> None:
            texts: list[str] = []
            lines: list[int] = []

            def flush() -> None:
                path = chunks / chunk_name(progress.batches)
                _write_chunk(path, texts, lines, params.shared)
                if dest.remote is not None:
                    uploads.append(asyncio.run_coroutine_threadsafe(dest.publish(path), loop))
                progress.batches += 1
                texts.clear()
                lines.clear()

            for number, text, _item in read_items(source, "source"):
                texts.append(text)
                lines.append(number)
                progress.items += 1
                if len(texts) == params.batch_size:
                    flush()
            if texts:
                flush()

        async with Heartbeater() as heartbeater:
            heartbeater.update(progress)
            await asyncio.to_thread(stage)
            for upload in uploads:
                await asyncio.wrap_future(upload)
        if progress.items == 0:
            raise errors.INVALID_INPUT(f"source {source.describe()!r} holds no items")
        activity.logger.info("staged %d items in %d chunks of %s", progress.items, progress.batches, params.source)
        return StagedSource(
            items=progress.items,
            batches=progress.batches,
            chunks_location=dest.location(chunks),
            batches_destination=dest.location(folder / "batches"),
            folder_location=dest.location(folder),
        )

    @activity.defn(name="merge_bulk_records")
    async def merge_bulk_records(self, params: MergeBulkRecordsParams) -> MergedRecords:
        dest, folder = self._folder(params.destination, params.name)
        client = activity.client()
        batches = PartFile(folder / "batches.ndjson")
        errs = PartFile(folder / "errors.ndjson")
        imps = PartFile(folder / "imports.ndjson") if params.collect_imports else None
        counts = {"errors": 0, "imports": 0, "unmatched": 0}
        async with Heartbeater() as heartbeater:
            for part in (batches, errs, imps):
                if part is not None:
                    part.open(0)
            try:
                for index in range(params.batches):
                    heartbeater.update(StageProgress(items=counts["errors"], batches=index))
                    handle = client.get_workflow_handle(child_workflow_id(params.parent_workflow_id, index))
                    line: dict[str, Any] = {"batch": index, "workflow_id": handle.id}
                    try:
                        result = await handle.result()
                    except WorkflowFailureError as e:
                        cause = e.cause
                        line |= {
                            "status": "FAILED_TO_RUN",
                            "error": getattr(cause, "message", str(cause)),
                            "error_type": getattr(cause, "type", None),
                        }
                        result = None
                    if result is not None:
                        result = result if isinstance(result, dict) else json.loads(json.dumps(result, default=str))
                        line |= result
                        chunk = f"{params.chunks_location}/{chunk_name(index)}"
                        if result.get("errors_location"):
                            await asyncio.to_thread(
                                self._merge_one,
                                errs,
                                index,
                                "errors",
                                result["errors_location"],
                                chunk,
                                params.kind,
                                counts,
                            )
                        if imps is not None and result.get("imports_location"):
                            await asyncio.to_thread(
                                self._merge_one,
                                imps,
                                index,
                                "imports",
                                result["imports_location"],
                                chunk,
                                params.kind,
                                counts,
                            )
                    batches.write(json.dumps(line, separators=(",", ":"), default=str).encode() + b"\n")
                for part in (batches, errs, imps):
                    if part is not None:
                        part.commit()
            finally:
                for part in (batches, errs, imps):
                    if part is not None:
                        part.close()
        return MergedRecords(
            errors_location=await dest.publish(errs.final),
            imports_location=await dest.publish(imps.final) if imps is not None else None,
            batches_location=await dest.publish(batches.final),
            errors=counts["errors"],
            imports=counts["imports"],
            unmatched=counts["unmatched"],
        )

    def _merge_one(
        self,
        out: PartFile,
        index: int,
        which: Literal["errors", "imports"],
        records_location: str,
        chunk_location: str,
        kind: str,
        counts: dict[str, int],
    ) -> None:
        """Append batch `index`'s records, each with `batch` and the source `line` of its item."""
        chunk = json.loads(_read_location(self.locations, chunk_location, "chunk"))
        by_item: dict[str, list[int]] = defaultdict(list)
        for item, number in zip(chunk["requests"], chunk.get("lines") or [], strict=False):
            by_item[canonical(item)].append(number)
        for queue in by_item.values():
            queue.reverse()  # pop() from the end = the first occurrence first
        singular = "event" if kind == "events" else "user"
        for raw in _lines_of(self.locations, records_location, which):
            if not raw.strip():
                continue
            record = json.loads(raw)
            item = record.get(singular) if which == "errors" else record
            found = by_item.get(canonical(item)) if item is not None else None
            number = found.pop() if found else None
            if number is None:
                counts["unmatched"] += 1
            out.write(
                json.dumps(
                    {"batch": index, "line": number, **record}, separators=(",", ":"), ensure_ascii=False
                ).encode()
                + b"\n"
            )
            counts[which] += 1
        out.flush()
