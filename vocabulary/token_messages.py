"""The messages of the download limit: what the legacy sync, its activity and DownloadTokensWorkflow send.

The token bucket (workflows/download_tokens.py) is started by an activity (activities/download_tokens.py,
signal-with-start `request_token`) and answers each request by signalling `download_token_granted` to
the requester, so both sides type these: the workflow's name and input, the signals and their payloads.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from vocabulary.contract import InputModel
from vocabulary.policies import DEFAULT_DOWNLOAD_BURST

TOKENS_WORKFLOW = "DownloadTokensWorkflow"
REQUEST_SIGNAL = "request_token"  # TokenRequest, to the token bucket
GRANTED_SIGNAL = "download_token_granted"  # TokenGrant, to the requester
MAX_BURST = 2


class TokenRequest(BaseModel):
    """One workflow run asking for one token (one download attempt); `request_id` is unique within the run."""

    holder: str  # the requester's workflow id
    run_id: str
    request_id: str
    per_minute: float | None = None  # the requesting worker's FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE (the latest wins)
    burst: int | None = None


class TokenGrant(BaseModel):
    request_id: str
    granted_at: datetime  # the bucket's workflow time of the grant


class RequestTokenParams(BaseModel):
    holder: str
    run_id: str
    request_id: str


class DownloadTokensInput(InputModel):
    """Input of `DownloadTokensWorkflow` (started by `request_download_token`, never by hand)."""

    per_minute: float = Field(default=2.0, gt=0, description="Tokens a minute: FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE.")
    burst: int = Field(
        default=DEFAULT_DOWNLOAD_BURST, ge=1, le=MAX_BURST, description="Tokens granted at once after an idle spell."
    )
    # Carried over by continue-as-new.
    tat: datetime | None = Field(default=None, description="Carried over: when the bucket is full again (GCRA).")
    waiting: list[TokenRequest] = Field(default_factory=list, description="Carried over by continue-as-new.")
    granted: dict[str, str] = Field(
        default_factory=dict, description="Carried over: the last request granted to each holder run."
    )
    granted_total: int = Field(default=0, ge=0, description="Carried over by continue-as-new.")


def tokens_summary(per_minute: float) -> str:
    """The token bucket's one-line UI summary."""
    return f"Download tokens: legacy bundle downloads at {per_minute:g} a minute for this API key"


def tokens_workflow_id(task_queue: str, key_fingerprint: str) -> str:
    """One token bucket per API key (by fingerprint, never the key) and task queue (its workers run it)."""
    return f"fullstory-download-tokens-{task_queue}-{key_fingerprint}"
