"""Bulk import activities: read a big source of items once, stage it in chunks, merge the chunks' records.

- `stage_bulk_source`: stream the source (local path, file:// or an object-store URL; NDJSON or a JSON array;
  gzip by suffix or magic bytes) once, never whole in memory, validating every item, into chunk files
  `chunk-NNNNN.json` (`{"requests": [...], "shared": ..., "lines": [...]}`) under the destination, where
  every worker can read them (an object-store destination: uploaded beside the results). Deterministic:
  a new attempt after a crash writes the very same chunks, so a child's Idempotency-Key always comes
  with an identical body.
- `merge_bulk_batch`: one batch's records with their `batch` and source `line`, as the batch ends (while
  the others run), to `merged/batch-NNNNN-<job>.<which>.ndjson`, written whole or not at all.
- `merge_bulk_records`: one NDJSON of every chunk's error records (each with its `batch` and source
  `line`), the same for imports when asked, and `batches.ndjson` (one line per batch result, read from
  the child workflows' results in Temporal): each batch's merged file copied, or (missing) merged here.
  Rebuilt from the start on a new attempt: nothing twice.

The items are read by activities/request_items.py (NDJSON or a JSON array, gzip or not, with their lines).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError

from activities.heartbeat import Heartbeater
from activities.item_lines import canonical, find_lines
from activities.locations import Destination, Locations, PartFile, safe_name
from activities.request_items import (
    Block,
    chunk_name,
    read_item_blocks,
    staged_items,
    staged_lines,
    write_staged_chunk,
)
from vocabulary import errors
from vocabulary.contract import BatchKind

if TYPE_CHECKING:
    from activities.deps import ActivityDeps

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


class MergeBulkBatchParams(BaseModel):
    kind: BatchKind
    index: int
    job_id: str
    errors_location: str | None = None
    imports_location: str | None = None
    chunks_location: str
    destination: str | None = None
    name: str


class MergedBatch(BaseModel):
    errors: int
    imports: int
    unmatched: int = 0


class StageProgress(BaseModel):
    items: int = 0
    batches: int = 0


def child_workflow_id(parent_workflow_id: str, index: int) -> str:
    """A chunk's BatchImportWorkflow id: stable, so its Idempotency-Key survives any crash or continue-as-new."""
    return f"{parent_workflow_id}-batch-{index:05d}"


def merged_batch_name(index: int, job_id: str, which: str) -> str:
    """A batch's records with their batch and line, merged as the batch ended (under the import's folder)."""
    return f"merged/batch-{index:05d}-{safe_name(job_id, 100)}.{which}.ndjson"


def _lines_of(locations: Locations, location: str, field: str) -> Iterator[bytes]:
    with locations.source(location, field).open() as fh:
        yield from fh


FEW_RECORDS = 200  # a batch's records up to which their items are looked for in its chunk (not all read)
WRITERS = 2  # chunks written at once: each write waits on the disk and for the GIL, so a few overlap
PENDING_CHUNKS = 2 * WRITERS  # chunks read and not yet written, at most: memory stays flat whatever the source


def _stage_chunks(
    blocks: Iterator[Block],
    chunks: Path,
    params: StageBulkSourceParams,
    progress: StageProgress,
    upload: Callable[[list[Path]], None],
) -> None:
    """Blocks of items into chunks of `batch_size`; chunks are written (and fsynced) on threads of their own
    while the next are read, so the disk's waits overlap the parsing. The reading waits when
    `PENDING_CHUNKS` are not written yet."""
    size = params.batch_size
    parts: list[Block] = []  # the chunk being gathered
    gathered = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=WRITERS) as writer:
        pending: collections.deque[concurrent.futures.Future[list[Path]]] = collections.deque()

        def flush(blocks: list[Block]) -> None:
            while len(pending) >= PENDING_CHUNKS:
                upload(pending.popleft().result())  # a write that failed fails the staging
            pending.append(writer.submit(write_staged_chunk, chunks, progress.batches, blocks, params.shared))
            progress.batches += 1

        for block in blocks:
            progress.items += len(block)
            while gathered + len(block) >= size:
                head, block = block.split(size - gathered)
                flush([*parts, head])
                parts, gathered = [], 0
            if len(block):
                parts.append(block)
                gathered += len(block)
        if parts:
            flush(parts)
        while pending:
            upload(pending.popleft().result())


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
            def upload(paths: list[Path]) -> None:
                if dest.remote is not None:
                    uploads.extend(asyncio.run_coroutine_threadsafe(dest.publish(path), loop) for path in paths)

            _stage_chunks(read_item_blocks(source, "source"), chunks, params, progress, upload)

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

    @activity.defn(name="merge_bulk_batch")
    async def merge_bulk_batch(self, params: MergeBulkBatchParams) -> MergedBatch:
        """One batch's records, each with its batch and source line, as the batch ends (while others run):
        the final merge then only copies them. Written whole or not at all; the final merge does any that
        is missing itself."""
        dest, folder = self._folder(params.destination, params.name)
        counts = {"errors": 0, "imports": 0, "unmatched": 0}
        chunk = f"{params.chunks_location}/{chunk_name(params.index)}"
        records: list[tuple[Literal["errors", "imports"], str | None]] = [
            ("errors", params.errors_location),
            ("imports", params.imports_location),
        ]
        async with Heartbeater():
            for which, location in records:
                if not location:
                    continue
                part = PartFile(folder / merged_batch_name(params.index, params.job_id, which))
                part.open(0)
                try:
                    await asyncio.to_thread(
                        self._merge_one, part, params.index, which, location, chunk, params.kind, counts
                    )
                    part.commit()
                finally:
                    part.close()
                await dest.publish(part.final)
        return MergedBatch(errors=counts["errors"], imports=counts["imports"], unmatched=counts["unmatched"])

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
                    line = await self._merge_batch(client, params, index, (dest, folder), errs, imps, counts)
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

    async def _merge_batch(
        self,
        client: Client,
        params: MergeBulkRecordsParams,
        index: int,
        where: tuple[Destination, Path],
        errs: PartFile,
        imps: PartFile | None,
        counts: dict[str, int],
    ) -> dict[str, Any]:
        """Batch `index`'s line of batches.ndjson (its child's result); its records appended to errs and imps."""
        dest, folder = where
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
            outputs: list[tuple[Literal["errors", "imports"], PartFile | None]] = [("errors", errs), ("imports", imps)]
            for which, out in outputs:
                if out is not None and result.get(f"{which}_location"):
                    merged = dest.location(folder / merged_batch_name(index, str(result.get("job_id")), which))
                    if not await asyncio.to_thread(self._copy_merged, out, index, which, merged, counts):
                        await asyncio.to_thread(
                            self._merge_one, out, index, which, result[f"{which}_location"], chunk, params.kind, counts
                        )
        return line

    def _copy_merged(
        self, out: PartFile, index: int, which: Literal["errors", "imports"], location: str, counts: dict[str, int]
    ) -> bool:
        """Append a batch's records as merged when it ended; False when there are none (not merged then)."""
        unmatched = b'{"batch":%d,"line":null,' % index  # how every record of an unknown line starts
        try:
            with self.locations.source(location, which).open() as fh:
                while piece := fh.read(1 << 20) + fh.readline():
                    out.write(piece)
                    counts[which] += piece.count(b"\n")
                    counts["unmatched"] += piece.count(b"\n" + unmatched) + piece.startswith(unmatched)
        except FileNotFoundError:
            return False
        out.flush()
        return True

    def _lines_by_item(self, chunk_location: str, wanted: dict[bytes, Any] | None) -> dict[bytes, list[int]]:
        """Items of a chunk (by `canonical`) -> their source lines, first occurrence last (for pop()): the
        `wanted` ones looked for by a string of their own when they are few, else every item."""
        by_item: dict[bytes, list[int]] = defaultdict(list)
        lines = staged_lines(self.locations, chunk_location)
        with self.locations.source(chunk_location, "chunk").open() as fh:
            if lines is not None and wanted is not None:
                found = find_lines(fh.read(), lines, wanted)
                if found is not None:
                    return found
                fh.seek(0)
            if lines is not None:  # one item a line: read a line at a time
                for raw, number in zip(staged_items(fh), lines, strict=False):
                    by_item[canonical(orjson.loads(raw))].append(number)
            else:  # staged before 2026-12: the lines inside the chunk
                chunk = orjson.loads(fh.read())
                for item, number in zip(chunk["requests"], chunk.get("lines") or [], strict=False):
                    by_item[canonical(item)].append(number)
        for queue in by_item.values():
            queue.reverse()
        return by_item

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
        singular = "event" if kind == "events" else "user"

        def item_of(raw: bytes) -> Any:  # orjson's reading only finds the item's line; the record is json's
            echoed = orjson.loads(raw)
            return echoed.get(singular) if which == "errors" else echoed

        few = list(itertools.islice(_lines_of(self.locations, records_location, which), FEW_RECORDS + 1))
        wanted = None
        if len(few) <= FEW_RECORDS:
            items = [item_of(raw) for raw in few if raw.strip()]
            wanted = {canonical(item): item for item in items if item is not None}
        by_item = self._lines_by_item(chunk_location, wanted)
        for raw in few if wanted is not None else _lines_of(self.locations, records_location, which):
            if not raw.strip():
                continue
            record = json.loads(raw)  # written out exactly
            item = item_of(raw)
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
