"""Timeouts and retry policies, each declared once.

- A single HTTP call: retried with backoff (or the server's Retry-After) until the step's deadline.
- A wait ("is it done yet?"): one check per attempt, the retry policy is the loop. The gap between
  checks is the activity's `next_retry_delay` (Retry-After, else `poll_delay`); the policy below is
  the same curve, the fallback when an attempt dies without saying.
- A long activity (page walk, download): heartbeats, so a dead worker's work moves on within
  `HEARTBEAT_TIMEOUT`; the heartbeat interval is derived from it (activities/heartbeat.py).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from vocabulary.errors import NON_RETRYABLE

CALL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=NON_RETRYABLE,
)
# Short, so a call held by a worker that died is retried elsewhere within about 30 s.
CALL_TIMEOUT = timedelta(seconds=30)

# A step of an unattended sync (listing, storing, a manifest line) retries transient trouble this long.
UNATTENDED_STEP_BUDGET = timedelta(days=7)

# The status-check backoff curve: 2 s, 3 s, 4.5 s, ... up to the caller's max_poll_interval.
POLL_FIRST_GAP = timedelta(seconds=2)
POLL_BACKOFF = 1.5
POLL_MAX_EXPONENT = 60  # 2 s x 1.5^60: about 2,900 years

# Long activities (page walks, downloads) heartbeat every HEARTBEAT_TIMEOUT / HEARTBEATS_PER_TIMEOUT,
# and the worker sends at most one heartbeat a second (worker.py): 6 s is ~6 beats in a row lost before
# a false timeout (the beat runs on the event loop; writes, hashing and the gzip check run off it), and
# with LONG_RETRY's gaps (<= 2 s) a dead worker's walk or download runs on another within ~8 s.
# A new attempt resumes from the part on disk (activities/journal.py), so a kill costs no re-download.
HEARTBEAT_TIMEOUT = timedelta(seconds=6)
# Their retries: workers die again and again (spot nodes, deploys), and each death is one more attempt;
# CALL_RETRY's doubling would leave minutes between the 8th and the 9th. A capped, short gap instead.
LONG_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=2),
    non_retryable_error_types=NON_RETRYABLE,
)
HEARTBEATS_PER_TIMEOUT = 20

# The org-wide batch limit (workflows/org_batch_limit.py): FULLSTORY_MAX_BATCHES_IN_PROGRESS's default
# (Fullstory queues beyond ~100 batch jobs in progress per org and answers 429 at 200), and how often a
# slot whose holder no longer runs is looked for (FULLSTORY_BATCH_SLOT_RECLAIM_SECONDS).
DEFAULT_MAX_BATCHES_IN_PROGRESS = 90
DEFAULT_BATCH_SLOT_RECLAIM_SECONDS = 60.0


def poll_delay(check: int, cap: timedelta) -> timedelta:
    """The gap after status check number `check` (1-based) when the server sends no Retry-After."""
    # The exponent is capped: the curve has long reached any cap by then, and a bigger power overflows timedelta.
    return min(cap, POLL_FIRST_GAP * POLL_BACKOFF ** min(max(0, check - 1), POLL_MAX_EXPONENT))


# A job whose start time is known is checked every max(POLL_FIRST_GAP, POLL_ELAPSED_SHARE x its age), up to
# the cap: its end is seen within 2 s for a job of seconds and within 10 % of its length for a job of
# hours, at O(log) checks (each gap is a tenth of the age), and a job older than 10 x the cap at one a cap.
POLL_ELAPSED_SHARE = 0.1


def poll_delay_for_age(age: timedelta, cap: timedelta) -> timedelta:
    """The gap before the next check of a job that has been running for `age` (no Retry-After sent)."""
    return min(cap, max(POLL_FIRST_GAP, age * POLL_ELAPSED_SHARE))


# A job expected to take about `expected` (a bulk import's earlier batches at Fullstory) is also checked just
# after that much of its age: its end is seen at once rather than up to a gap later.
EXPECTED_END_MARGIN = timedelta(seconds=0.25)


def poll_delay_expecting(age: timedelta, cap: timedelta, expected: timedelta | None) -> timedelta:
    """`poll_delay_for_age`, or sooner: just after the job's expected length, when that comes first."""
    gap = poll_delay_for_age(age, cap)
    if expected is not None and age < expected:
        return min(gap, expected - age + EXPECTED_END_MARGIN)
    return gap


def poll_retry(max_interval: timedelta) -> RetryPolicy:
    """Retry policy of a wait: `poll_delay`'s curve, the fallback to the activity's `next_retry_delay`."""
    return RetryPolicy(
        initial_interval=min(POLL_FIRST_GAP, max_interval),
        backoff_coefficient=POLL_BACKOFF,
        maximum_interval=max_interval,
        non_retryable_error_types=NON_RETRYABLE,
    )


# The download limit (workflows/download_tokens.py): legacy bundle downloads are spaced by the token
# bucket at FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE, with this burst (at most this many downloads at once
# after an idle spell). 1: evenly spaced, so no minute (sliding or on the clock) ever sees more than the
# rate; 2 would let two starts land together, which a fixed-window limit at Fullstory could count as 2 + 1.
DEFAULT_DOWNLOAD_BURST = 1
