"""One logging setup: structlog (JSON, or pretty on a terminal) with secrets redacted.

Temporal's own loggers and `activity.logger` go through the standard library
logging, which is routed through the same processors, so every line carries
the redaction. Signed URLs lose their query string; the API key is replaced.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SIGNED_QUERY = re.compile(r"(https?://[^\s?\"'<>]+)\?[^\s\"'<>]*")
_secrets: list[str] = []


def add_secret(value: str | None) -> None:
    if value and len(value) >= 4 and value not in _secrets:
        _secrets.append(value)


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "<redacted>")
    return _SIGNED_QUERY.sub(r"\1?<redacted>", text)


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = redact(value)
        elif isinstance(value, (dict, list, tuple)):
            event_dict[key] = redact(repr(value)) if _secrets or "?" in repr(value) else value
    return event_dict


def _temporal_context(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # temporalio's activity/workflow loggers attach their context as `temporal_activity` / `temporal_workflow`.
    record = event_dict.get("_record")
    if record is not None:
        for attr in ("temporal_activity", "temporal_workflow"):
            ctx = getattr(record, attr, None)
            if isinstance(ctx, dict):
                for k in ("workflow_id", "run_id", "activity_type", "activity_id", "attempt", "workflow_type"):
                    if k in ctx:
                        event_dict.setdefault(k, ctx[k])
    return event_dict


def configure_logging(level: str = "INFO", json_output: bool | None = None) -> None:
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _temporal_context,
    ]
    renderer = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Workflow/activity ids go in fields (see _temporal_context), not appended to every message.
    from temporalio import activity, workflow

    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def add_log_level_flag(parser: argparse.ArgumentParser) -> None:
    """`--log-level`, default LOG_LEVEL or INFO: the worker's and the CLI's one flag for it."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default=os.environ.get("LOG_LEVEL", "INFO").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO (or LOG_LEVEL)",
    )
