"""One Heartbeater for every long activity.

`update(details)` records the latest committed state and heartbeats it; a
background task repeats the latest details every `heartbeat_interval()` so a
slow page or a slow read never trips the heartbeat timeout. Heartbeat details
come back as plain JSON on the next attempt: `resume_details()` rebuilds them.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity

from vocabulary.policies import HEARTBEAT_TIMEOUT, HEARTBEATS_PER_TIMEOUT

T = TypeVar("T", bound=BaseModel)


def heartbeat_interval() -> float:
    """Seconds between heartbeats: a fraction of this activity's heartbeat timeout (as the workflow set it)."""
    timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
    return (timeout or HEARTBEAT_TIMEOUT) / timedelta(seconds=1) / HEARTBEATS_PER_TIMEOUT


class Heartbeater:
    def __init__(self) -> None:
        self._interval = heartbeat_interval()
        self._details: Any = None
        self._task: asyncio.Task[None] | None = None

    def update(self, details: BaseModel | None = None) -> None:
        self._details = details.model_dump(mode="json") if details is not None else None
        self._beat()

    def _beat(self) -> None:
        if self._details is None:
            activity.heartbeat()
        else:
            activity.heartbeat(self._details)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._beat()

    async def __aenter__(self) -> Heartbeater:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # One last beat so the server holds the final committed state.
        self._beat()


def resume_details(model: type[T]) -> T | None:
    """The previous attempt's last heartbeat as `model`, or None (first attempt, or unreadable)."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return model.model_validate(details[0])
    except (ValidationError, TypeError):
        activity.logger.warning("ignoring unreadable heartbeat details; starting over")
        return None
