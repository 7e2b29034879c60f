"""What every activities class is built with: one of these per worker process, built from the settings by
the composition root (wiring.py: `activity_deps`), which states no default of its own."""

from __future__ import annotations

from dataclasses import dataclass

from activities.fullstory_client import FullstoryClient
from activities.locations import Locations


@dataclass(frozen=True, kw_only=True)
class ActivityDeps:
    client: FullstoryClient  # the one HTTP client: auth, base URLs, the error table
    locations: Locations  # FULLSTORY_ALLOWED_LOCATIONS and FULLSTORY_DATA_DIR (the default destination)
    max_batches_in_progress: int  # FULLSTORY_MAX_BATCHES_IN_PROGRESS (activities/org_batch_limit.py)
    batch_slot_reclaim_seconds: float  # FULLSTORY_BATCH_SLOT_RECLAIM_SECONDS
    export_downloads_per_minute: float  # FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE (activities/download_tokens.py)
    export_download_burst: int  # the token bucket's burst (vocabulary/policies.py: DEFAULT_DOWNLOAD_BURST)
