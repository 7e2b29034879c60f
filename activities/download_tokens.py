"""The download limit's activity: ask the token bucket for a download token.

Fullstory allows 2 legacy bundle downloads a minute per org. `FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE`
(default 2) is this deployment's pace: one durable `DownloadTokensWorkflow` per API key (and task
queue) grants tokens at that rate (workflows/download_tokens.py), whatever the cluster's task queue
partitions; the messages both sides send are vocabulary/token_messages.py.

- `request_download_token`: signal-with-start `request_token` on the bucket (starting it, with this
  worker's rate, if it does not run); the token arrives later as a `download_token_granted` signal.
  Repeating it is harmless: a request already granted is granted again, never charged twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.signal_with_start import signal_with_start_per_key
from vocabulary.token_messages import (
    REQUEST_SIGNAL,
    TOKENS_WORKFLOW,
    DownloadTokensInput,
    RequestTokenParams,
    TokenRequest,
    tokens_summary,
    tokens_workflow_id,
)

if TYPE_CHECKING:
    from activities.deps import ActivityDeps


class DownloadTokenActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client = deps.client
        self.per_minute = deps.export_downloads_per_minute
        self.burst = deps.export_download_burst

    @activity.defn(name="request_download_token")
    async def request_download_token(self, params: RequestTokenParams) -> str:
        """Signal-with-start `request_token`; returns the bucket's workflow id."""
        request = TokenRequest(
            holder=params.holder,
            run_id=params.run_id,
            request_id=params.request_id,
            per_minute=self.per_minute,
            burst=self.burst,
        )
        return await signal_with_start_per_key(
            TOKENS_WORKFLOW,
            tokens_workflow_id,
            self.client.key_fingerprint,
            DownloadTokensInput(per_minute=self.per_minute, burst=self.burst),
            REQUEST_SIGNAL,
            request,
            tokens_summary(self.per_minute),
        )
