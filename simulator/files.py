"""Export files of an exact compressed size, made on the fly from a few precomputed gzip members.

A gzip file may be a concatenation of members. A handful of distinct blocks of event rows are
compressed once per process (about 512 KiB each, ~7:1) with a sync flush every few rows, so any
prefix of a block that ends at a flush point is a valid deflate stream. A file is full members
cycled over the blocks, then one tail member: a block prefix closed by a final stored block whose
padding (spaces before the last newline) makes the file exactly `size` bytes. Serving a byte range
is a bisect over member offsets and slices of shared bytes: no file is ever held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

BLOCKS = 4  # distinct blocks of rows
ROWS_PER_BLOCK = 4000
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, no mtime, OS unknown


@dataclass(frozen=True)
class Format:
    first: str  # text before the first row of the file
    cont: str  # text before the first row of a later member
    sep: str  # between rows
    mid_end: str  # closes a member that is not the last
    last_end: str  # closes the file (padding goes before it)


FORMATS = {
    "ndjson": Format(first="", cont="", sep="\n", mid_end="\n", last_end="\n"),
    "json": Format(first="[", cont=",\n", sep=",\n", mid_end="", last_end="]\n"),
}

PAGES = [
    "/",
    "/pricing",
    "/products",
    "/products/{n}",
    "/cart",
    "/checkout",
    "/account/settings",
    "/blog/{slug}",
    "/search",
    "/help/articles/{n}",
    "/signup",
    "/login",
]
EVENTS = [
    "click",
    "navigate",
    "change",
    "load",
    "focus",
    "highlight",
    "cut",
    "copy",
    "paste",
    "thrash",
    "abandon",
    "pageview",
]
TARGETS = [
    "Add to cart",
    "Checkout",
    "Sign in",
    "Continue",
    "Learn more",
    "Search",
    "Submit",
    "Next",
    "Back",
    "Subscribe",
    "Download",
    "Close",
    "Accept cookies",
    "Apply coupon",
    "",
]
SELECTORS = [
    "button.btn.btn-primary",
    "a.nav-link",
    "div.product-card > button.add",
    "input#search",
    "form.checkout button[type=submit]",
    "span.icon-close",
    "li.menu-item > a",
    "div.modal button",
]
BROWSERS = [
    ("Chrome", "Windows", "Desktop"),
    ("Safari", "iOS", "Mobile"),
    ("Chrome", "Android", "Mobile"),
    ("Firefox", "Linux", "Desktop"),
    ("Edge", "Windows", "Desktop"),
    ("Safari", "OS X", "Desktop"),
]
CITIES = [
    ("US", "CA", "San Francisco", "37.7749,-122.4194"),
    ("US", "NY", "New York", "40.7128,-74.0060"),
    ("GB", "ENG", "London", "51.5074,-0.1278"),
    ("DE", "BE", "Berlin", "52.5200,13.4050"),
    ("US", "GA", "Atlanta", "33.7490,-84.3880"),
    ("FR", "IDF", "Paris", "48.8566,2.3522"),
]
WORDS = [
    "alpha",
    "bravo",
    "delta",
    "eagle",
    "falcon",
    "harbor",
    "island",
    "jungle",
    "kernel",
    "lumen",
    "meadow",
    "nectar",
    "orbit",
    "prairie",
    "quartz",
    "river",
    "summit",
    "timber",
    "velvet",
    "willow",
]


def make_rows(block: int, count: int) -> list[str]:
    """Event rows like Fullstory's Data Export: sessions of a few pages, pages of a few events."""
    rng = random.Random(0x5EED + block)
    rows: list[str] = []
    t = 1_700_000_000_000 + block * 86_400_000
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

    def token(n: int) -> str:
        return "".join(rng.choices(alnum, k=n))

    while len(rows) < count:
        indv, user, session = (rng.randrange(10**15, 10**16) for _ in range(3))
        browser, os_name, device = rng.choice(BROWSERS)
        country, region, city, latlong = rng.choice(CITIES)
        ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        app_key = f"user-{rng.randrange(10**6)}"
        for _ in range(rng.randrange(1, 4)):
            page = rng.randrange(10**15, 10**16)
            path = rng.choice(PAGES).format(n=rng.randrange(1, 50_000), slug="-".join(rng.sample(WORDS, 3)))
            url = f"https://www.example.com{path}?sid={token(12)}" + (
                f"&utm_source={rng.choice(WORDS)}" if rng.random() < 0.3 else ""
            )
            for _ in range(rng.randrange(1, 6)):
                t += rng.randrange(50, 20_000)
                start = f"{_iso(t // 1000)}.{t % 1000:03d}Z"
                rows.append(
                    json.dumps(
                        {
                            "EventId": f"{rng.getrandbits(128):032x}",
                            "IndvId": indv,
                            "UserId": user,
                            "SessionId": session,
                            "PageId": page,
                            "UserAppKey": app_key,
                            "UserDisplayName": app_key.replace("user-", "User "),
                            "UserEmail": f"{app_key}@example.com",
                            "EventStart": start,
                            "EventType": rng.choice(EVENTS),
                            "EventCustomName": "",
                            "EventTargetText": f"{rng.choice(TARGETS)} {rng.choice(WORDS)} #{rng.randrange(10**5)}",
                            "EventTargetSelectorTok": f"{rng.choice(SELECTORS)}.css-{token(6)}",
                            "EventModFrustrated": int(rng.random() < 0.02),
                            "EventModDead": int(rng.random() < 0.03),
                            "EventModError": int(rng.random() < 0.01),
                            "EventModSuspicious": 0,
                            "PageDuration": rng.randrange(1000, 600_000),
                            "PageActiveDuration": rng.randrange(500, 300_000),
                            "PageUrl": url,
                            "PageRefererUrl": "https://www.google.com/" if rng.random() < 0.2 else "",
                            "PageIp": ip,
                            "PageLatLong": latlong,
                            "PageCity": city,
                            "PageRegion": region,
                            "PageCountry": country,
                            "PageBrowser": browser,
                            "PageDevice": device,
                            "PageOperatingSystem": os_name,
                            "PageNumInfos": rng.randrange(3),
                            "PageNumWarnings": rng.randrange(3),
                            "PageNumErrors": int(rng.random() < 0.1),
                            "PageMaxScrollDepthPercent": rng.randrange(101),
                            "PageClusterId": rng.randrange(10**9),
                            "LoadDomContentTime": rng.randrange(10**5),
                            "LoadFirstPaintTime": rng.randrange(10**5),
                            "TabId": token(10),
                        },
                        separators=(",", ":"),
                    )
                )
    return rows[:count]


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


@dataclass
class Block:
    """One compressed block: a deflate stream with byte-aligned flush points."""

    data: bytes  # raw deflate (no header), ending at the last flush point, not final
    comp: array  # compressed offset of each flush point
    raw: array  # uncompressed length at each flush point
    crcs: array  # crc32 of the uncompressed text up to each flush point
    rows: array  # rows written up to each flush point


_blocks: dict[tuple[str, int, bool], Block] = {}
_blocks_lock = threading.Lock()


def get_block(fmt_name: str, index: int, first: bool) -> Block:
    fmt = FORMATS[fmt_name]
    key = (fmt_name, index, first and fmt.first != fmt.cont)
    with _blocks_lock:
        block = _blocks.get(key)
        if block is None:
            block = _blocks[key] = _compress_block(fmt, index, key[2])
        return block


def _compress_block(fmt: Format, index: int, first: bool) -> Block:
    prefix = fmt.first if first else fmt.cont
    rows = make_rows(index, ROWS_PER_BLOCK)
    co = zlib.compressobj(6, zlib.DEFLATED, -15, 9)
    out, comp, raw, crcs, nrows = [], array("Q"), array("Q"), array("L"), array("L")
    size = crc = length = 0

    def point(n: int) -> None:
        nonlocal size
        chunk = co.flush(zlib.Z_SYNC_FLUSH)
        out.append(chunk)
        size += len(chunk)
        comp.append(size)
        raw.append(length)
        crcs.append(crc)
        nrows.append(n)

    def write(text: str) -> None:
        nonlocal size, crc, length
        data = text.encode()
        chunk = co.compress(data)
        out.append(chunk)
        size += len(chunk)
        crc = zlib.crc32(data, crc)
        length += len(data)

    write(prefix)
    point(0)
    for i, row in enumerate(rows):
        write((fmt.sep if i else "") + row)
        if i < 16 or (i + 1) % 16 == 0 or i == len(rows) - 1:
            point(i + 1)
    return Block(b"".join(out), comp, raw, crcs, nrows)


def _stored_final(payload: bytes) -> bytes:
    """Stored deflate blocks holding payload, the last one marked final."""
    parts, view = [], memoryview(payload)
    while True:
        chunk, view = view[:65535], view[65535:]
        final = not len(view)
        parts.append(bytes([1 if final else 0]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + bytes(chunk))
        if final:
            return b"".join(parts)


def member(block: Block, point: int, end: bytes) -> bytes:
    """A complete gzip member: the block up to a flush point, then `end` in a final stored block."""
    comp = block.comp[point]
    crc = zlib.crc32(end, block.crcs[point])
    size = (block.raw[point] + len(end)) & 0xFFFFFFFF
    return b"".join((GZIP_HEADER, memoryview(block.data)[:comp], _stored_final(end), struct.pack("<LL", crc, size)))


def member_size(block: Block, point: int, end_len: int) -> int:
    return len(GZIP_HEADER) + block.comp[point] + 5 * max(1, -(-end_len // 65535)) + end_len + 8


_full: dict[tuple[str, int, bool], bytes] = {}


def full_member(fmt_name: str, index: int, first: bool) -> bytes:
    key = (fmt_name, index, first)
    data = _full.get(key)
    if data is None:
        block = get_block(fmt_name, index, first)
        data = _full.setdefault(key, member(block, len(block.comp) - 1, FORMATS[fmt_name].mid_end.encode()))
    return data


class GzipFile:
    """An export file of exactly `size` bytes: a valid gzip of event rows (NDJSON or a JSON array)."""

    def __init__(self, size: int, fmt: str = "ndjson", seed: int = 0, head: str = "") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}")
        self.length = self.size = size
        self.fmt = fmt
        self.seed = seed
        # A first row of the file's own (a segment export's requested timeRange, say): files for different
        # requests differ, and a reader can tell which request a file answers.
        self.head = head
        self._sha256: str | None = None
        self._lock = threading.Lock()
        self._layout()

    def _layout(self) -> None:
        fmt = FORMATS[self.fmt]
        last_end = fmt.last_end.encode()
        self.offsets = array("Q")  # start of each full member
        self.members: list[bytes] = []  # full member j is members[self.kinds[j]]
        self.kinds = array("B")
        names: dict[tuple[int, bool], int] = {}
        off, j = 0, 0
        if self.head:
            opening = (fmt.first + self.head + (fmt.mid_end if self.fmt == "ndjson" else "")).encode()
            head_member = gzip.compress(opening, mtime=0)
            self.members.append(head_member)
            self.offsets.append(0)
            self.kinds.append(0)
            off = len(head_member)
        while True:
            index, first = (self.seed + j) % BLOCKS, j == 0 and not self.head
            block = get_block(self.fmt, index, first)
            data = full_member(self.fmt, index, first)
            # Add it only if the tail after it (the next block) can still hold a row; else this is the tail.
            after = get_block(self.fmt, (self.seed + j + 1) % BLOCKS, False)
            if self.size - off - len(data) < member_size(after, 1, len(last_end)):
                break
            slot = names.setdefault((index, first), len(self.members))
            if slot == len(self.members):
                self.members.append(data)
            self.offsets.append(off)
            self.kinds.append(slot)
            off += len(data)
            j += 1
        remaining = self.size - off
        points = len(block.comp)
        fits = [p for p in range(1, points) if member_size(block, p, len(last_end)) <= remaining]
        if not fits:
            raise ValueError(
                f"an export file of one row needs at least {member_size(block, 1, len(last_end))} "
                f"bytes, not {self.size}"
            )
        point = fits[-1]
        pad = remaining - member_size(block, point, len(last_end))
        end = b" " * pad + last_end
        self.tail_offset = off
        self.tail = member(block, point, end)
        # A stored payload over 64 KiB needs more block headers than member_size counted: trim pad.
        while len(self.tail) > remaining:
            end = end[len(self.tail) - remaining :]
            self.tail = member(block, point, end)
        assert off + len(self.tail) == self.size, (off, len(self.tail), self.size)
        heads = 1 if self.head else 0
        self.rows = (
            heads
            + sum(
                get_block(self.fmt, (self.seed + i) % BLOCKS, i == 0 and not heads).rows[-1]
                for i in range(len(self.offsets) - heads)
            )
            + block.rows[point]
        )

    def write(self, send: Callable[[memoryview], None], start: int, end: int) -> None:
        """Send bytes [start, end) of the file."""
        pos = start
        j = bisect_right(self.offsets, pos) - 1 if self.offsets and pos < self.tail_offset else -1
        while pos < end:
            if 0 <= j < len(self.offsets):
                base, data = self.offsets[j], self.members[self.kinds[j]]
                j += 1
            else:
                base, data = self.tail_offset, self.tail
                j = len(self.offsets)
            stop = min(end, base + len(data))
            send(memoryview(data)[pos - base : stop - base])
            pos = stop

    def iter_bytes(self, start: int = 0, end: int | None = None) -> list[memoryview]:
        """The bytes [start, end) as views of shared buffers (for tests and small files)."""
        chunks: list[memoryview] = []
        self.write(chunks.append, start, self.size if end is None else end)
        return chunks

    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                h = hashlib.sha256()
                self.write(h.update, 0, self.size)
                self._sha256 = h.hexdigest()
            return self._sha256


class Truncated:
    """The first `length` bytes of a file: what a server that dies mid-file sends, with a matching length."""

    def __init__(self, file: GzipFile, length: int) -> None:
        self.file, self.length = file, length

    def write(self, send: Callable[[memoryview], None], start: int, end: int) -> None:
        self.file.write(send, start, min(end, self.length))
