"""The words people read: times, durations, sizes, ids and the UI's current details.

Every time and duration in a UI text, a log line or an error message is formatted here, once.
Pure functions, no I/O and no clock (callers pass the time), so workflows use them with
`workflow.now()` and activities with the wall clock. Locations lose any userinfo and query
string (a signed URL's signature, say).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from vocabulary.contract import redact_url

Row = tuple[str, str]

DATA_DIR = "the worker's `FULLSTORY_DATA_DIR`"
PENDING_TAB = "*Pending Activities* tab"
MAX_SUMMARY = 200  # a one-line summary; the UI cuts long ones anyway


# --- small formatters -----------------------------------------------------------------------------


def at(t: datetime | int) -> str:
    """A moment (a datetime or unix seconds) to the minute, in UTC: `2026-11-26 15:28 UTC`."""
    if isinstance(t, int):
        t = datetime.fromtimestamp(t, tz=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def clock(t: datetime) -> str:
    """A time of day to the second, in UTC: `15:28:42 UTC`."""
    return t.astimezone(UTC).strftime("%H:%M:%S UTC")


def iso(t: int | datetime) -> str:
    """A moment (unix seconds or a datetime) as RFC 3339 in UTC: `2026-11-26T15:28:42Z`."""
    if isinstance(t, int):
        t = datetime.fromtimestamp(t, tz=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def unix(t: int) -> str:
    """Unix seconds for a person, with the number itself: `2026-11-26 15:28 UTC (`1795000000`)`."""
    return f"{at(t)} (`{t}`)"


def span(d: timedelta) -> str:
    """A duration as a person says it: `45 s`, `1 min 30 s`, `24 h`, `1 h 30 min`, `7 d`."""
    s = d.total_seconds()
    if s < 60:
        return f"{round(s, 1):g} s"
    s = round(s)
    if s < 3600:
        m, sec = divmod(s, 60)
        return f"{m} min" + (f" {sec} s" if sec else "")
    if s < 2 * 86400:
        h, rest = divmod(s, 3600)
        m = rest // 60
        return f"{h} h" + (f" {m} min" if m else "")
    d_, rest = divmod(s, 86400)
    h = rest // 3600
    return f"{d_} d" + (f" {h} h" if h else "")


def size(n: int) -> str:
    """Bytes, readable: `512 bytes`, `3.0 MiB`."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


def shorten(text: str, limit: int = 80) -> str:
    """At most `limit` characters; the middle goes, so both the scheme and the file name stay."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


def code(value: object, limit: int = 80) -> str:
    """An id or a path as inline code (markdown-safe: underscores and stars stay literal)."""
    return "`" + shorten(str(value).replace("`", "'"), limit) + "`"


def escape(text: str) -> str:
    """Free text (an error message) with markdown's special characters made literal."""
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text


def location(dest: str | None, limit: int = 80) -> str:
    """A destination for display: no userinfo, no query or fragment (signatures, tokens), shortened."""
    return code(redact_url(dest), limit) if dest else DATA_DIR


def bar(pct: float, width: int = 20) -> str:
    """`▓▓▓▓▓░░░░░░░░░░░░░░░ 25%`: a percent at a glance."""
    pct = min(max(pct, 0.0), 100.0)
    filled = round(pct / 100 * width)
    return f"`{'▓' * filled}{'░' * (width - filled)}` **{pct:g}%**"


def next_check(max_poll: timedelta) -> str:
    """When the next status check is, as far as a workflow can know.

    Each check is one attempt of a wait activity; the server schedules the next attempt from the
    activity's `next_retry_delay` without waking the workflow, so only the Pending Activities tab
    knows the exact time. The poll policy bounds it.
    """
    return (
        f"within {span(max_poll)} (sooner at first; later only if Fullstory's Retry-After asks). "
        f"Exact time: *Next Retry* on the {PENDING_TAB}"
    )


def next_check_text(delay: timedelta, now: datetime) -> str:
    """ "next check in 7 s (at 15:40:24 UTC)": a retry's time, for the UI's Last Failure and logs."""
    when = now + delay
    day = f" on {when:%Y-%m-%d}" if delay >= timedelta(hours=12) else ""
    return f"next check in {span(delay)} (at {clock(when)}{day})"


def status_checks_row(max_poll: timedelta) -> Row:
    return ("Status checks", f"at most {span(max_poll)} apart, unless Fullstory's Retry-After asks for longer")


LIVE_STATUS_ROW: Row = ("Live status", "*Current Details* (beside this), or the `progress` query")


# --- current details (set by the workflows) --------------------------------------------------------


def current_details(headline: str, rows: Iterable[Row] = ()) -> str:
    """Markdown for `workflow.set_current_details`: a bold headline, then one bullet per fact."""
    lines = [f"**{headline}**"]
    rows = [(label, value) for label, value in rows if value]
    if rows:
        lines.append("")
        lines += [f"- **{label}:** {value}" for label, value in rows]
    return "\n".join(lines)


def plain(markdown: str) -> str:
    """The same text without markdown emphasis, for the `progress` query's one-line `detail`."""
    text = re.sub(r"(?<!\\)[*`]", "", markdown)
    return re.sub(r"\\([\\`*_\[\]<>#|])", r"\1", text)


def one_line(headline: str, rows: Iterable[Row] = ()) -> str:
    """Headline and rows as one plain line: `headline; label: value; ...`."""
    parts = [plain(headline)] + [f"{label.lower()}: {plain(value)}" for label, value in rows if value]
    return "; ".join(parts)


def stamp(t: datetime) -> str:
    """A window bound in names: `20261101T000000Z` (sorts by time; no colons)."""
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
