"""The control API under /_sim/: lets a test drive a simulator that runs in another process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .batch import BatchImports
from .protocol import Request, Response, error, json_response
from .routing import NO_AUTH, Router
from .state import SimState

# Plain knobs a test in another process may set through POST /_sim/settings.
SETTINGS = (
    "page_delay",
    "last_page_token_style",
    "status_errors_field",
    "legacy_burst",
    "legacy_per_minute",
    "storage_bytes_per_second",
    "fail_windows",
)


def register_control(
    sim: SimState,
    router: Router,
    *,
    batch: BatchImports,
    add_batch_job: Callable[..., str],
    add_operation: Callable[..., str],
    add_bundles: Callable[..., list[str]],
) -> None:
    """The /_sim/ routes. The add_* callables are the Simulator's own methods of those names (server.py passes them)."""

    def kwargs_call(fn: Callable[..., Any], wrap: Callable[[Any], dict]) -> Callable[[Request], Response]:
        def handler(req: Request) -> Response:
            try:
                body = req.json() or {}
                if not isinstance(body, dict):
                    raise TypeError("the body must be a JSON object of keyword arguments")
                return json_response(wrap(fn(**body)))
            except (TypeError, ValueError, KeyError) as exc:
                return error(400, str(exc), "invalid_argument")

        return handler

    def set_batch_defaults(**kwargs: Any) -> dict:
        sim.batch_defaults.clear()
        sim.batch_defaults.update(kwargs)
        return dict(sim.batch_defaults)

    def set_export_defaults(**kwargs: Any) -> dict:
        sim.export_defaults.clear()
        sim.export_defaults.update(kwargs)
        return dict(sim.export_defaults)

    def set_settings(**kwargs: Any) -> dict:
        for name, value in kwargs.items():
            if name not in SETTINGS:
                raise ValueError(f"{name} is not a setting; settings: {', '.join(SETTINGS)}")
            setattr(sim, name, value)
        return {name: getattr(sim, name) for name in SETTINGS}

    def add_fault(**kwargs: Any) -> dict:
        f = sim.fault(**kwargs)
        return {"path_regex": f.path_regex, "kind": f.kind, "count": f.count}

    def records(req: Request) -> Response:
        job_id = req.params["job_id"]
        if job_id not in batch.jobs:
            return error(404, f"no job {job_id}")
        try:
            return json_response({"records": batch.expected_records(job_id, req.query.get("which", "errors"))})
        except ValueError as exc:
            return error(400, str(exc), "invalid_argument")

    def stats(req: Request) -> Response:
        return json_response({**sim.stats(), "legacy_429s": sim.legacy_429s})

    def reset(req: Request) -> Response:
        sim.reset_stats()
        return json_response({})

    router.add("POST", "/_sim/batch_jobs", kwargs_call(add_batch_job, lambda job_id: {"job_id": job_id}), NO_AUTH)
    router.add(
        "POST", "/_sim/batch_defaults", kwargs_call(set_batch_defaults, lambda d: {"batch_defaults": d}), NO_AUTH
    )
    router.add("POST", "/_sim/faults", kwargs_call(add_fault, lambda d: d), NO_AUTH)
    router.add("GET", "/_sim/records/{job_id}", records, NO_AUTH)
    router.add("GET", "/_sim/stats", stats, NO_AUTH)
    router.add("POST", "/_sim/reset_stats", reset, NO_AUTH)
    router.add("POST", "/_sim/operations", kwargs_call(add_operation, lambda op_id: {"operation_id": op_id}), NO_AUTH)
    router.add("POST", "/_sim/bundles", kwargs_call(add_bundles, lambda ids: {"ids": ids}), NO_AUTH)
    router.add(
        "POST", "/_sim/export_defaults", kwargs_call(set_export_defaults, lambda d: {"export_defaults": d}), NO_AUTH
    )
    router.add("POST", "/_sim/settings", kwargs_call(set_settings, lambda d: d), NO_AUTH)
