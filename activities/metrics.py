"""Our own Prometheus metrics, served by temporalio's runtime next to its SDK metrics.

One `Metrics` per worker process, made from the runtime's meter (`worker.py`)
and held by the `FullstoryClient`, so every activity counts through the same
object. Without a metrics port the meter is a no-op and counting costs nothing.

    fullstory_http_requests{method, endpoint, status}   calls to Fullstory's API (status "error" = no response)
    fullstory_retry_after_seconds{endpoint}             Retry-After seconds received from Fullstory and honoured
    fullstory_bytes_downloaded{source}                  bytes of exports and bundles written to disk
    fullstory_records_collected{kind, which}            batch-job error/import records written as NDJSON
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from temporalio.common import MetricMeter

_FIXED_SEGMENT = re.compile(r"[a-z_]+|v\d+")


def endpoint_of(path: str) -> str:
    """`/v2/events/batch/abc123=/errors` -> `/v2/events/batch/{id}/errors`: ids out of label values."""
    path = path.split("?", 1)[0]
    return "/".join(seg if not seg or _FIXED_SEGMENT.fullmatch(seg) else "{id}" for seg in path.split("/"))


class Metrics:
    def __init__(self, meter: MetricMeter | None = None) -> None:
        meter = meter or MetricMeter.noop
        self.http_requests = meter.create_counter(
            "fullstory_http_requests", "Calls to Fullstory's API by endpoint and HTTP status"
        )
        self.retry_after_seconds = meter.create_counter(
            "fullstory_retry_after_seconds", "Retry-After seconds sent by Fullstory and honoured", "s"
        )
        self.bytes_downloaded = meter.create_counter(
            "fullstory_bytes_downloaded", "Bytes of exports and bundles downloaded to disk", "By"
        )
        self.records_collected = meter.create_counter(
            "fullstory_records_collected", "Batch-job error and import records written as NDJSON"
        )

    def http_call(self, method: str, path: str, status: int | None, retry_after: timedelta | None) -> None:
        """Count one call to Fullstory (status None: no response), and the Retry-After it sent."""
        endpoint = endpoint_of(path)
        self.http_requests.add(
            1, {"method": method, "endpoint": endpoint, "status": str(status) if status is not None else "error"}
        )
        if retry_after:
            self.retry_after_seconds.add(math.ceil(retry_after.total_seconds()), {"endpoint": endpoint})
