"""Worker Versioning: the Worker Deployment Version the workers run as, from the settings.

FULLSTORY_DEPLOYMENT_NAME unset (`make run`, the tests): None, the workers are unversioned and every
workflow's `versioning_behavior` is ignored. Set: every worker of the process polls as
`<deployment name>.<build id>`; the build id is FULLSTORY_BUILD_ID, or by default the package version
plus a hash of the workflow code (workflows/*.py and vocabulary/*.py, read as files, never imported:
infra/ stays below workflows/). The same workflow code gives the same build id, so an image that only
changed activities joins the running version; any change to workflow code is a new version.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import (
    WorkerDeploymentConfig,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from infra.settings import Settings

log = logging.getLogger("fullstory_jobs.versioning")

ROOT = Path(__file__).resolve().parents[1]
# The code whose changes can change a workflow's commands (workflows and what they speak).
WORKFLOW_CODE = ("workflows", "vocabulary")
# A workflow type that declares no behaviour (none of ours: tests/test_versioning.py) stays on the
# build that started it: it can never meet code it was not written against.
DEFAULT_BEHAVIOR = VersioningBehavior.PINNED


def package_version() -> str:
    try:
        return importlib.metadata.version("fullstory-jobs")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def workflow_code_hash(root: Path = ROOT) -> str:
    """sha256 over the sorted workflow sources (path and bytes), first 12 hex digits."""
    h = hashlib.sha256()
    for package in WORKFLOW_CODE:
        for path in sorted((root / package).glob("*.py")):
            h.update(f"{package}/{path.name}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:12]


def default_build_id() -> str:
    return f"{package_version()}-{workflow_code_hash()}"


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    if settings.fullstory_deployment_name is None:
        return None
    return WorkerDeploymentVersion(
        deployment_name=settings.fullstory_deployment_name,
        build_id=settings.fullstory_build_id or default_build_id(),
    )


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """What every Worker of the process gets as `deployment_config` (None: unversioned)."""
    version = deployment_version(settings)
    if version is None:
        return None
    return WorkerDeploymentConfig(
        version=version, use_worker_versioning=True, default_versioning_behavior=DEFAULT_BEHAVIOR
    )


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """The SDK's sandboxed runner; unversioned, one that leaves the workflows' versioning behaviour out.

    temporalio sends a workflow's `@workflow.defn(versioning_behavior=...)` with every workflow task
    completion, versioned or not, and a server (1.32, the dev server included) refuses it from an
    unversioned worker: "versioning behavior cannot be specified without deployment options being set
    with versioned mode", and the workflow never gets past its first task. So the behaviour is
    declared once, on the workflow, and dropped here when FULLSTORY_DEPLOYMENT_NAME is unset.
    """
    runner = SandboxedWorkflowRunner()
    return runner if settings.fullstory_deployment_name is not None else UnversionedRunner(runner)


class UnversionedRunner(WorkflowRunner):
    def __init__(self, inner: WorkflowRunner) -> None:
        self.inner = inner

    def prepare_workflow(self, defn: Any) -> None:  # a workflow definition, passed through
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return UnversionedInstance(self.inner.create_instance(det))

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


class UnversionedInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance) -> None:
        self.inner = inner

    def activate(self, act: Any) -> Any:
        completion = self.inner.activate(act)
        if completion.HasField("successful"):
            completion.successful.versioning_behavior = VersioningBehavior.UNSPECIFIED.value
        return completion

    def get_serialization_context(self, command_info: Any) -> Any:
        return self.inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self.inner.get_external_store_context(command_info)

    def get_info(self) -> Any:
        return self.inner.get_info()

    def get_thread_id(self) -> int | None:
        return self.inner.get_thread_id()


async def make_first_version_current(client: Client, version: WorkerDeploymentVersion, timeout: float = 30.0) -> bool:
    """Bootstrap a new deployment: when no version was ever made current, make this one current.

    Without a current version the server routes new workflows to unversioned workers, which a
    versioned fleet has none of: the very first versioned deploy (and `docker compose up`) would
    start nothing. Once any version was made current (by this or by an operator, even
    `--unversioned`), this does nothing: rollouts are the operator's (docs/graceful-deploys.md).
    Returns whether it set the version. The deployment appears once the workers poll: retried.
    """
    namespace = client.namespace
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            described = await client.workflow_service.describe_worker_deployment(
                DescribeWorkerDeploymentRequest(namespace=namespace, deployment_name=version.deployment_name)
            )
            routing = described.worker_deployment_info.routing_config
            if routing.HasField("current_version_changed_time") or routing.HasField("current_deployment_version"):
                return False
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=namespace,
                    deployment_name=version.deployment_name,
                    build_id=version.build_id,
                    conflict_token=described.conflict_token,
                    identity=client.identity,
                )
            )
            log.warning(
                "worker deployment %s had no current version: made %s current",
                version.deployment_name,
                version.to_canonical_string(),
            )
            return True
        except Exception as e:  # not there yet (NotFound), the version not registered yet, or a race
            if loop.time() > deadline:
                log.warning(
                    "could not check the current version of worker deployment %s: %s", version.deployment_name, e
                )
                return False
            await asyncio.sleep(1.0)
