"""deploy/: the Dockerfile, docker-compose.yml and the Kubernetes manifests.

Offline and fast (no Docker engine, no cluster): every YAML passes yamllint (deploy/.yamllint.yaml)
and parses; the manifests validate against the Kubernetes JSON schemas shipped in kubernetes-validate
(strict: unknown fields fail); the compose file validates against the compose-spec schema shipped in
check-jsonschema and, when a compose CLI is installed, `docker compose config -q`; `kubectl
kustomize` renders the kustomization when kubectl is there. The validators are in the `dev` extras,
so `make test` runs them (imported, never skipped). And the properties that matter hold: every env
var name is a real setting (ours or temporalio's envconfig), the key file the worker reads is where
the Secret is mounted, the user is non-root and the same in the image and the pod, the grace periods
cover the worker's graceful shutdown, the entrypoint is the console script and CMD one of its
commands, and the probes and the compose healthcheck hit the worker's real health endpoint on the
port the settings open (checked against infra/health.py serving on loopback).
Independent of conftest.py.
"""

from __future__ import annotations

import ast
import asyncio
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import check_jsonschema
import kubernetes_validate as kv
import pytest
import yaml
from yamllint import linter as yamllint
from yamllint.config import YamlLintConfig

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
YAMLLINT_CONFIG = DEPLOY / ".yamllint.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The oldest Kubernetes minor the manifests are checked against, besides the newest schema shipped.
OLDEST_K8S = "1.30.0"


# --- helpers -----------------------------------------------------------------------------------


def load_docs_text(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return load_docs_text(path.read_text())


def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind in deploy/k8s (the kustomization excluded)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_docs(path):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    return objects


def settings_env_names() -> set[str]:
    """The environment variable names `infra.settings.Settings` reads."""
    from pydantic import AliasChoices

    from infra.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def env_names_read_in_code() -> set[str]:
    """Other names the worker and CLI read themselves (`os.environ.get("X")`, `os.getenv("X")`), e.g. LOG_LEVEL."""
    names = set()
    # worker.py, cli.py, and the packages they read settings in
    for path in [
        *sorted(REPO.glob("*.py")),
        *sorted((REPO / "activities").glob("*.py")),
        *sorted((REPO / "infra").glob("*.py")),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and (
                    node.func.attr == "getenv"
                    or (node.func.attr == "get" and ast.unparse(node.func.value).endswith("environ"))
                )
            ):
                names.add(node.args[0].value)
    return names


def temporal_env_names() -> set[str]:
    """Temporal's own connection settings, read by temporalio's envconfig (infra/temporal_connection.py)."""
    from infra.temporal_connection import TEMPORAL_ENV_VARS

    return set(TEMPORAL_ENV_VARS)


def known_env_names() -> set[str]:
    return settings_env_names() | temporal_env_names() | env_names_read_in_code()


def unknown_env_names(names: set[str]) -> set[str]:
    """Names neither setting reads (TEMPORAL_GRPC_META_<HEADER> is envconfig's open family of gRPC headers)."""
    return {n for n in names - known_env_names() if not n.startswith("TEMPORAL_GRPC_META_")}


def quantity(q: str | int) -> float:
    """A Kubernetes quantity in base units (bytes, cores)."""
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def worker_graceful_shutdown_seconds() -> float:
    """The workers' graceful_shutdown_timeout (wiring.GRACEFUL_SHUTDOWN, what make_workers passes)."""
    from wiring import GRACEFUL_SHUTDOWN

    return GRACEFUL_SHUTDOWN.total_seconds()


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def compose() -> dict[str, Any]:
    [doc] = load_docs(COMPOSE)
    return doc


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def container() -> dict[str, Any]:
    [c] = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def port_of(c: dict[str, Any], name: str) -> int:
    [port] = [p["containerPort"] for p in c.get("ports", []) if p["name"] == name]
    return port


# --- every YAML ---------------------------------------------------------------------------------


YAML_FILES = sorted(DEPLOY.rglob("*.y*ml"))


def lint(text: str, name: str) -> list[str]:
    config = YamlLintConfig(file=str(YAMLLINT_CONFIG))
    return [f"{name}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})" for p in yamllint.run(text, config, name)]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_into_mappings_and_passes_yamllint(path: Path) -> None:
    docs = load_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)
    problems = lint(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)  # warnings too


def test_yamllint_catches_what_the_yaml_parser_lets_through() -> None:
    """PyYAML keeps the last of two equal keys silently; yamllint (with this config) does not."""
    text = (K8S / "deployment.yaml").read_text()
    assert lint(text, "deployment.yaml") == []
    doubled = text.replace("  replicas: 2", "  replicas: 2\n  replicas: 3", 1)
    assert load_docs_text(doubled)[0]["spec"]["replicas"] == 3  # the parser is fine with it
    assert any("key-duplicates" in p for p in lint(doubled, "deployment.yaml"))
    assert any("truthy" in p for p in lint(text + "extra: yes\n", "deployment.yaml"))
    assert {".yamllint.yaml", "docker-compose.yml"} <= {p.name for p in YAML_FILES}
    assert len([p for p in YAML_FILES if p.parent == K8S]) >= 7


# --- Kubernetes ---------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_sets_the_image() -> None:
    [kust] = load_docs(K8S / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    listed = kust["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert {o["kind"] for o in k8s_objects().values()} >= {
        "Deployment",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    assert container()["image"] in {img["name"] for img in kust.get("images", [])}


@pytest.mark.parametrize("version", [OLDEST_K8S, kv.utils.latest_version()])
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    for kind, obj in k8s_objects().items():
        assert obj["apiVersion"] and obj["metadata"]["name"], kind
        kv.validate(obj, version, strict=True)  # raises with the path of the first bad field


def test_an_unknown_field_or_a_bad_value_fails_the_schema_check() -> None:
    """The schema check is real: a typo in the Deployment is caught, and so is a wrong type."""
    deployment = k8s_objects()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, kv.utils.latest_version(), strict=True)
    deployment = k8s_objects()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, kv.utils.latest_version(), strict=True)


def test_kustomize_build_renders_valid_objects_with_the_registry_image() -> None:
    cli = shutil.which("kubectl") or shutil.which("kustomize")
    if cli is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    cmd = [cli, "kustomize", str(K8S)] if cli.endswith("kubectl") else [cli, "build", str(K8S)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{' '.join(cmd)} did not finish in 30 s")
    if proc.returncode != 0 and "unknown command" in proc.stderr:
        pytest.skip(f"{cli} has no kustomize: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(rendered) == len(k8s_objects())
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    [kust] = load_docs(K8S / "kustomization.yaml")
    [image] = kust["images"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image['newName']}:{image['newTag']}"
    for obj in rendered:
        kv.validate(obj, kv.utils.latest_version(), strict=True)


def test_every_env_var_in_the_manifests_is_a_real_setting() -> None:
    objects = k8s_objects()
    known = known_env_names()
    c = container()
    config_maps = [src["configMapRef"]["name"] for src in c.get("envFrom", [])]
    assert config_maps == [objects["ConfigMap"]["metadata"]["name"]]
    names = set(objects["ConfigMap"]["data"]) | {e["name"] for e in c.get("env", [])}
    unknown = unknown_env_names(names)
    assert not unknown, (
        "not settings of infra/settings.py nor temporalio envconfig names "
        f"(a typo is silently ignored): {sorted(unknown)}"
    )
    assert "TEMPORAL_ADDRESS" in temporal_env_names() and "TEMPORAL_ADDRESS" in known
    assert set(objects["ConfigMap"]["data"]) >= {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "FULLSTORY_BASE_URL",
        "FULLSTORY_TASK_QUEUE",
        "FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE",
        "FULLSTORY_LISTEN_HOST",
        "FULLSTORY_HEALTH_PORT",
        "FULLSTORY_METRICS_PORT",
    }
    # The key comes from the mounted file, never as a plain env var.
    assert "FULLSTORY_API_KEY" not in names and "FULLSTORY_API_KEY_FILE" in names


def test_the_worker_loads_its_settings_from_the_pod_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.settings import load_settings

    for name in known_env_names():
        monkeypatch.delenv(name, raising=False)
    objects = k8s_objects()
    env = dict(objects["ConfigMap"]["data"])
    env.update({e["name"]: e["value"] for e in container()["env"] if "value" in e})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # SettingsError (exit 2 in the worker) on a bad value
    assert settings.fullstory_task_queue == env["FULLSTORY_TASK_QUEUE"]
    assert settings.fullstory_export_downloads_per_minute == float(env["FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE"])
    assert settings.fullstory_data_dir == "/data"
    assert str(settings.fullstory_api_key_file) == env["FULLSTORY_API_KEY_FILE"]
    assert settings.fullstory_listen_host == "0.0.0.0"  # the kubelet and Prometheus connect from outside the pod
    assert settings.fullstory_health_port == port_of(container(), "health")
    assert settings.fullstory_metrics_port == port_of(container(), "metrics")

    # The Temporal connection, as temporalio's envconfig reads it from the same environment.
    from infra.temporal_connection import load_temporal_target

    target = load_temporal_target({**env, "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"})
    assert (target.address, target.namespace) == (env["TEMPORAL_ADDRESS"], env["TEMPORAL_NAMESPACE"])
    assert not target.connect.get("tls")  # the in-cluster frontend: plain gRPC
    # With the Secret's optional temporal-api-key present (Temporal Cloud), TLS turns on by itself.
    cloud = load_temporal_target({**env, "TEMPORAL_API_KEY": "k", "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"})
    assert cloud.connect.get("tls") and cloud.connect.get("api_key") == "k"


def test_the_api_key_file_is_the_mounted_secret_and_the_secret_holds_no_real_key() -> None:
    objects = k8s_objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    c = container()
    key_file = Path(next(e["value"] for e in c["env"] if e["name"] == "FULLSTORY_API_KEY_FILE"))
    [mount] = [m for m in c["volumeMounts"] if key_file.is_relative_to(m["mountPath"])]
    assert mount.get("readOnly") is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = objects["Secret"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    [item] = [i for i in volume["secret"]["items"] if Path(mount["mountPath"]) / i["path"] == key_file]
    values = secret.get("stringData", {})
    assert item["key"] in values
    assert "REPLACE" in values[item["key"]], "secret.yaml is a template: never commit a real key"
    assert volume["secret"]["defaultMode"] & 0o007 == 0, "the key file must not be world-readable"
    for e in c["env"]:  # any other secret reference points at the same Secret and may be absent
        if "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref.get("optional") is True


def test_the_pod_runs_non_root_read_only_with_writable_tmp_and_data() -> None:
    pod = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    c = container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    data_dir = next(e["value"] for e in c["env"] if e["name"] == "FULLSTORY_DATA_DIR")
    data = volumes[mounts[data_dir]]
    assert "emptyDir" in data or "persistentVolumeClaim" in data
    if "persistentVolumeClaim" in data:
        pvc = k8s_objects()["PersistentVolumeClaim"]
        assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        # Several replicas mount it at once: a part file left by a dead pod resumes on another.
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_the_image_user_is_the_pod_user() -> None:
    pod = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    user = [rest for op, rest in dockerfile_instructions() if op == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert int(uid) == pod["securityContext"]["runAsUser"]
    assert int(gid or uid) == pod["securityContext"]["runAsGroup"]


def test_resources_fit_the_measured_memory_and_the_grace_period_covers_shutdown() -> None:
    deployment = k8s_objects()["Deployment"]
    res = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[kind]), kind
    # Worker RSS: ~100 MiB idle, < 300 MiB downloading.
    assert quantity(res["requests"]["memory"]) >= 100 * 2**20
    assert quantity(res["limits"]["memory"]) >= 1.5 * 300 * 2**20
    assert quantity(res["limits"]["memory"]) >= quantity(res["requests"]["memory"])
    assert quantity(res["limits"]["cpu"]) >= quantity(res["requests"]["cpu"]) > 0
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 30
    assert grace > worker_graceful_shutdown_seconds()
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_worker_runs_as_a_worker_deployment_version_whose_build_id_is_the_image_tag() -> None:
    """FULLSTORY_DEPLOYMENT_NAME in the ConfigMap and compose; FULLSTORY_BUILD_ID from the pod's version label,
    which is the image tag kustomization.yaml sets (docs/graceful-deploys.md: one Deployment per build)."""
    from infra.settings import Settings

    config = k8s_objects()["ConfigMap"]["data"]
    assert Settings(fullstory_deployment_name=config["FULLSTORY_DEPLOYMENT_NAME"]).fullstory_deployment_name
    [build] = [e for e in container()["env"] if e["name"] == "FULLSTORY_BUILD_ID"]
    path = build["valueFrom"]["fieldRef"]["fieldPath"]
    label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    assert label, path
    pod_labels = k8s_objects()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    [image] = load_docs(K8S / "kustomization.yaml")[0]["images"]
    assert pod_labels[label[1]] == str(image["newTag"]), "the pod's version label is not the image tag"
    env = compose_env(compose()["services"]["worker"])
    assert env["FULLSTORY_DEPLOYMENT_NAME"] == config["FULLSTORY_DEPLOYMENT_NAME"]
    assert env["FULLSTORY_BUILD_ID"] == "${FULLSTORY_BUILD_ID:-}", "from the environment or .env, else the default"
    assert Settings(fullstory_build_id="").fullstory_build_id is None, "compose's empty value means the default"


def test_labels_tie_the_deployment_pdb_and_hpa_together() -> None:
    objects = k8s_objects()
    deployment, pdb, hpa = objects["Deployment"], objects["PodDisruptionBudget"], objects["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"], pdb["spec"]["selector"]):
        assert selector["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # With fewer replicas than minAvailable + 1 a node drain could never evict a worker.
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["minAvailable"] + 1
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]


def test_probes_and_metrics_use_the_named_ports_the_settings_open() -> None:
    objects = k8s_objects()
    c = container()
    config = objects["ConfigMap"]["data"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": int(config["FULLSTORY_HEALTH_PORT"]), "metrics": int(config["FULLSTORY_METRICS_PORT"])}
    assert ports == {"health": 8080, "metrics": 9464}
    assert config["FULLSTORY_LISTEN_HOST"] == "0.0.0.0", "on 127.0.0.1 neither the kubelet nor Prometheus reach it"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "health"}, probe
        assert c[probe]["timeoutSeconds"] >= 1 and c[probe]["periodSeconds"] >= 5, probe
    # /readyz waits up to CHECK_TIMEOUT for Temporal's health check: the probe must wait longer.
    from infra.health import CHECK_TIMEOUT

    assert c["readinessProbe"]["timeoutSeconds"] > CHECK_TIMEOUT
    # Liveness does not kill a pod that is shutting down gracefully (both endpoints say 503 then).
    pod = objects["Deployment"]["spec"]["template"]
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > pod["spec"]["terminationGracePeriodSeconds"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"
    text = (K8S / "deployment.yaml").read_text()
    assert "exec:" not in text and "healthcheck.py" not in text


# --- the probes against the worker's real health endpoint --------------------------------------


def compose_healthcheck_argv() -> list[str]:
    test = compose()["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    return [sys.executable, *test[2:]]


async def run_compose_healthcheck(health_port: int) -> int:
    proc = await asyncio.create_subprocess_exec(
        *compose_healthcheck_argv(),
        env={**os.environ, "FULLSTORY_HEALTH_PORT": str(health_port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 20)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


async def test_probe_paths_and_the_compose_healthcheck_against_the_worker_health_endpoint() -> None:
    """The worker's own endpoint (infra/health.py) on loopback: what the kubelet and compose would see."""
    from infra.health import Health

    temporal_ok = True

    async def temporal_check() -> None:
        if not temporal_ok:
            raise ConnectionRefusedError("Temporal is down")

    c = container()
    probes = {name: c[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = Health(temporal_check)

    async def statuses() -> dict[str, int]:
        return {
            name: await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}{path}")
            for name, path in probes.items()
        }

    # Nothing listening yet (the worker is still connecting): the compose check fails.
    assert await run_compose_healthcheck(port) != 0
    async with health.serving("127.0.0.1", port):
        # Started, workers not polling yet: nothing passes.
        assert set((await statuses()).values()) == {503}
        assert await run_compose_healthcheck(port) != 0
        health.polling = True
        assert await statuses() == {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 200}
        assert await run_compose_healthcheck(port) == 0
        # Temporal unreachable: not ready (no new work), but alive (no restart).
        temporal_ok = False
        assert await statuses() == {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 503}
        assert await run_compose_healthcheck(port) != 0
        temporal_ok = True
        assert await run_compose_healthcheck(port) == 0
        # SIGTERM: the workers stop polling.
        health.polling = False
        assert (await statuses())["readinessProbe"] == 503
        assert await run_compose_healthcheck(port) != 0


def test_the_compose_healthcheck_reads_the_status_code() -> None:
    """Independent of infra/health.py: 200 passes, 503 fails, a refused connection fails."""
    answer = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = answer["status"] if self.path == "/readyz" else 404
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]

    def check() -> int:
        return subprocess.run(
            compose_healthcheck_argv(),
            env={**os.environ, "FULLSTORY_HEALTH_PORT": str(port)},
            capture_output=True,
            timeout=20,
        ).returncode

    try:
        assert check() == 0
        answer["status"] = 503
        assert check() != 0
    finally:
        server.shutdown()
        server.server_close()
    assert check() != 0


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_runs_the_worker_as_non_root() -> None:
    instr = dockerfile_instructions()
    ops = [op for op, _ in instr]
    users = [rest for op, rest in instr if op == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "RUN steps after USER"
    # Exec form (JSON), so the worker is PID 1 and gets SIGTERM itself, not a shell.
    entrypoint = json.loads([rest for op, rest in instr if op == "ENTRYPOINT"][-1])
    assert entrypoint == ["fullstory-jobs"], "the console script that `pip install .` puts on PATH"
    assert "fullstory-jobs" in PYPROJECT["project"]["scripts"]
    assert any(op == "RUN" and re.search(r"pip install '?\.[\[' ]", rest) for op, rest in instr)
    cmd = json.loads([rest for op, rest in instr if op == "CMD"][-1])
    assert cmd == ["worker"] and container()["args"] == cmd
    assert ("STOPSIGNAL", "SIGTERM") in instr
    assert any(op == "ENV" and "FULLSTORY_DATA_DIR=/data" in rest for op, rest in instr)


def run_console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """`fullstory-jobs ARGS` as pyproject declares it (what the image's wrapper script runs), from the source tree."""
    module, _, attr = PYPROJECT["project"]["scripts"]["fullstory-jobs"].partition(":")
    code = (
        "import importlib, sys\n"
        f"sys.argv = ['fullstory-jobs', *{list(args)!r}]\n"
        f"target = importlib.import_module({module!r})\n"
        f"for name in {attr!r}.split('.'):\n"
        "    target = getattr(target, name)\n"
        "sys.exit(target())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_the_image_command_is_a_command_of_the_console_script() -> None:
    cmd = json.loads([rest for op, rest in dockerfile_instructions() if op == "CMD"][-1])
    ok = run_console_script(*cmd, "--help")
    assert ok.returncode == 0, f"fullstory-jobs {' '.join(cmd)} --help: {ok.stderr[-500:]}"
    assert "usage" in ok.stdout.lower()
    bad = run_console_script("no-such-command", "--help")
    assert bad.returncode != 0, "the check would pass any CMD"


def test_dockerfile_copies_what_exists_on_a_python_the_project_supports() -> None:
    instr = dockerfile_instructions()
    copied: set[str] = set()
    for op, rest in instr:
        if op == "COPY" and not rest.startswith("--from"):
            for src in rest.split()[:-1]:
                matches = sorted(REPO.glob(src.rstrip("/")))
                assert matches, f"COPY {src}: not in the repository (the build context)"
                copied.update(str(m.relative_to(REPO)) for m in matches)
    assert "deploy/healthcheck.py" not in copied
    base = [rest for op, rest in instr if op == "FROM"][0]
    m = re.match(r"python:(\d+)\.(\d+)-slim", base)
    assert m, f"FROM {base}: expected a slim python image"
    requires = PYPROJECT["project"]["requires-python"]
    floor = re.match(r">=\s*(\d+)\.(\d+)", requires)
    assert floor and (int(m[1]), int(m[2])) >= (int(floor[1]), int(floor[2])), f"{base} vs requires-python {requires}"
    # The package list of the image is the project's own (pip install .), so the copied packages are
    # the ones pyproject ships.
    setuptools = PYPROJECT["tool"]["setuptools"]
    shipped = set(setuptools["packages"]) | {f"{m}.py" for m in setuptools.get("py-modules", [])}
    missing = shipped - copied
    assert not missing, f"pyproject ships {sorted(missing)} but the Dockerfile does not COPY them"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignore), "keep the venv and git out of the build context"


# --- docker-compose -----------------------------------------------------------------------------


def compose_spec_errors(doc: dict[str, Any]) -> list[str]:
    import importlib.resources

    import jsonschema

    schema = json.loads(
        importlib.resources.files(check_jsonschema.__name__)
        .joinpath("builtin_schemas", "vendor", "compose-spec.json")
        .read_text()
    )
    errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(doc), key=str)
    return [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_compose_validates_against_the_compose_spec() -> None:
    errors = compose_spec_errors(compose())
    assert not errors, "\n".join(errors[:5])
    # The check is real: a misspelt key is caught.
    doc = compose()
    doc["services"]["worker"]["enviroment"] = {}
    assert any("enviroment" in e for e in compose_spec_errors(doc))


def test_compose_services_fit_together() -> None:
    services = compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "simulator"} <= set(services)
    worker, sim = services["worker"], services["simulator"]
    env = compose_env(worker)
    unknown = unknown_env_names(set(env))
    assert not unknown, f"not settings of infra/settings.py nor temporalio envconfig names: {sorted(unknown)}"

    # The simulator command: real flags of `python -m simulator`, and the worker points at it.
    argv = sim["entrypoint"]
    assert argv[:3] == ["python", "-m", "simulator"]
    help_text = subprocess.run(
        [sys.executable, "-m", "simulator", "--help"], capture_output=True, text=True, cwd=REPO, timeout=20
    ).stdout
    for flag in (a for a in argv[3:] if a.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), f"python -m simulator has no {flag}"
    assert env["FULLSTORY_API_KEY"] == option(argv, "--api-key")
    sim_host = option(argv, "--host")
    # The simulator writes its --host into the export URLs it signs: the worker must reach that name.
    assert sim_host == "simulator" and sim_host in services
    for var in ("FULLSTORY_BASE_URL", "FULLSTORY_EXPORT_BASE_URL"):
        url = urlsplit(env[var])
        assert (url.hostname, url.port) == (sim_host, int(option(argv, "--port"))), var

    # Temporal: the worker and the UI reach the server's frontend; the server sits on PostgreSQL.
    for who in (env, compose_env(services["temporal-ui"])):
        host, port = who["TEMPORAL_ADDRESS"].rsplit(":", 1)
        assert host in services and port == "7233"
    temporal_env = compose_env(services["temporal"])
    assert temporal_env["DB"].startswith("postgres") and temporal_env["POSTGRES_SEEDS"] in services
    assert "service_healthy" in json.dumps(
        services["temporal"].get("depends_on", {})
    ) or "service_completed_successfully" in json.dumps(services["temporal"].get("depends_on", {}))
    assert "temporal" in json.dumps(worker["depends_on"])

    # Same image, graceful stop, the same data dir as the image, the same health check as Kubernetes.
    for svc in (worker, sim):
        build = svc["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    stop = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert stop and int(stop[1]) > worker_graceful_shutdown_seconds()
    assert env["FULLSTORY_DATA_DIR"] == "/data" and any(v.endswith(":/data") for v in worker["volumes"])

    # Health and metrics as in Kubernetes: the same ports, reachable from outside the loopback.
    config = k8s_objects()["ConfigMap"]["data"]
    for var in ("FULLSTORY_LISTEN_HOST", "FULLSTORY_HEALTH_PORT", "FULLSTORY_METRICS_PORT"):
        assert env[var] == config[var], var
    # The healthcheck asks the endpoint the readinessProbe asks (and is run for real above).
    readiness_path = container()["readinessProbe"]["httpGet"]["path"]
    assert f"127.0.0.1:%s{readiness_path}'" in worker["healthcheck"]["test"][-1]
    assert f"127.0.0.1:{env['FULLSTORY_METRICS_PORT']}:{env['FULLSTORY_METRICS_PORT']}" in worker["ports"]
    # The worker runs the image's entrypoint (`fullstory-jobs worker`), not something else.
    assert "entrypoint" not in worker and worker.get("command", ["worker"]) == ["worker"]


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=20).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_parses_offline() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no compose CLI: the docker compose plugin is not installed (no engine needed, just the CLI)")
    proc = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
    )
    assert proc.returncode == 0, f"{shlex.join(cli)} config: {proc.stderr}"
    assert not re.search(r"(?i)\berror\b", proc.stderr), proc.stderr


def test_compose_shell_steps_are_valid_sh() -> None:
    """The inline setup scripts (schema, namespace) at least parse as POSIX sh, after compose's $$ -> $."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    for name, svc in compose()["services"].items():
        if svc.get("entrypoint", [None])[0] == "/bin/sh":
            script = svc["command"][0].replace("$$", "$")
            proc = subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True, timeout=10)
            assert proc.returncode == 0, f"{name}: {proc.stderr}\n{textwrap.indent(script, '  ')}"
