"""What every activities class is built with: one of these per worker process (worker.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from activities.fullstory_client import FullstoryClient
from activities.locations import Locations


@dataclass(frozen=True)
class ActivityDeps:
    client: FullstoryClient  # the one HTTP client: auth, base URLs, the error table
    data_dir: str  # FULLSTORY_DATA_DIR: the default destination, and local staging for object stores
    allowed_locations: str | None = None  # FULLSTORY_ALLOWED_LOCATIONS (None: the default)
    max_batches_in_progress: int = 90  # FULLSTORY_MAX_BATCHES_IN_PROGRESS (activities/org_batch_limit.py)
    batch_slot_reclaim_seconds: float = 60.0  # FULLSTORY_BATCH_SLOT_RECLAIM_SECONDS
    locations: Locations = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "locations", Locations(self.data_dir, self.allowed_locations))
