"""deploy/: the Dockerfile, docker-compose.yml, the Kubernetes manifests and the health check.

Offline and fast (no Docker engine, no cluster): every YAML parses; the manifests validate against
the Kubernetes JSON schemas shipped in kubernetes-validate (strict: unknown fields fail); the compose
file validates against the compose-spec schema shipped in check-jsonschema and, when a compose CLI is
installed, `docker compose config -q`; and the properties that matter hold: every env var name is a
real setting, the key file the worker reads is where the Secret is mounted, the user is non-root
and the same in the image and the pod, the grace periods cover the worker's graceful shutdown, the
probes run a script the image contains and that script tells a live worker from a dead one.
Independent of conftest.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
HEALTHCHECK = DEPLOY / "healthcheck.py"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"


# --- helpers -----------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


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
    """The environment variable names `activities.settings.Settings` reads."""
    from pydantic import AliasChoices

    from activities.settings import Settings

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
    """Other names the worker reads itself (`os.environ.get("X")`, `os.getenv("X")`), e.g. LOG_LEVEL."""
    names = set()
    for path in [REPO / "worker.py", *sorted((REPO / "activities").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and (node.func.attr == "getenv"
                         or (node.func.attr == "get" and ast.unparse(node.func.value).endswith("environ")))):
                names.add(node.args[0].value)
    return names


def known_env_names() -> set[str]:
    return settings_env_names() | env_names_read_in_code()


def quantity(q: str | int) -> float:
    """A Kubernetes quantity in base units (bytes, cores)."""
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def worker_graceful_shutdown_seconds() -> float:
    m = re.search(r"graceful_shutdown_timeout=timedelta\(seconds=(\d+(?:\.\d+)?)\)", (REPO / "worker.py").read_text())
    if m is None:
        pytest.skip("worker.py no longer sets graceful_shutdown_timeout=timedelta(seconds=N)")
    return float(m.group(1))


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


# --- every YAML ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_into_mappings(path: Path) -> None:
    docs = load_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


# --- Kubernetes ---------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_sets_the_image() -> None:
    [kust] = load_docs(K8S / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    listed = kust["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert {o["kind"] for o in k8s_objects().values()} >= {
        "Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    assert container()["image"] in {img["name"] for img in kust.get("images", [])}


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (ships the schemas)")
    version = kv.utils.latest_version()
    for kind, obj in k8s_objects().items():
        assert obj["apiVersion"] and obj["metadata"]["name"], kind
        kv.validate(obj, version, strict=True)  # raises with the path of the first bad field


def test_an_unknown_field_fails_the_schema_check() -> None:
    """The schema check is real: a typo in the Deployment is caught."""
    kv = pytest.importorskip("kubernetes_validate")
    deployment = k8s_objects()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
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
    kv = pytest.importorskip("kubernetes_validate")
    for obj in rendered:
        kv.validate(obj, kv.utils.latest_version(), strict=True)


def test_every_env_var_in_the_manifests_is_a_real_setting() -> None:
    objects = k8s_objects()
    known = known_env_names()
    c = container()
    config_maps = [src["configMapRef"]["name"] for src in c.get("envFrom", [])]
    assert config_maps == [objects["ConfigMap"]["metadata"]["name"]]
    names = set(objects["ConfigMap"]["data"]) | {e["name"] for e in c.get("env", [])}
    unknown = names - known
    assert not unknown, f"not settings of activities/settings.py (a typo is silently ignored): {sorted(unknown)}"
    assert set(objects["ConfigMap"]["data"]) >= {
        "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "FULLSTORY_BASE_URL", "FULLSTORY_TASK_QUEUE",
        "FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE"}
    # The key comes from the mounted file, never as a plain env var.
    assert "FULLSTORY_API_KEY" not in names and "FULLSTORY_API_KEY_FILE" in names


def test_the_worker_loads_its_settings_from_the_pod_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from activities.settings import load_settings

    for name in known_env_names():
        monkeypatch.delenv(name, raising=False)
    objects = k8s_objects()
    env = dict(objects["ConfigMap"]["data"])
    env.update({e["name"]: e["value"] for e in container()["env"] if "value" in e})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # SettingsError (exit 2 in the worker) on a bad value
    assert settings.temporal_address == env["TEMPORAL_ADDRESS"]
    assert settings.fullstory_task_queue == env["FULLSTORY_TASK_QUEUE"]
    assert settings.fullstory_export_downloads_per_minute == float(env["FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE"])
    assert settings.fullstory_data_dir == "/data"
    assert str(settings.fullstory_api_key_file) == env["FULLSTORY_API_KEY_FILE"]


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
        if "valueFrom" in e:
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


def test_labels_tie_the_deployment_pdb_and_hpa_together() -> None:
    objects = k8s_objects()
    deployment, pdb, hpa = objects["Deployment"], objects["PodDisruptionBudget"], objects["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"], pdb["spec"]["selector"]):
        assert selector["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])
    assert hpa["apiVersion"] == "autoscaling/v2"
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # With fewer replicas than minAvailable + 1 a node drain could never evict a worker.
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["minAvailable"] + 1
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]


def test_probes_run_the_health_check_that_the_image_contains() -> None:
    c = container()
    copied = {dest: src for op, rest in dockerfile_instructions() if op == "COPY"
              for *srcs, dest in [rest.split()] for src in srcs}
    workdir = [rest for op, rest in dockerfile_instructions() if op == "WORKDIR"][-1]
    for probe, check in (("livenessProbe", "live"), ("readinessProbe", "ready")):
        cmd = c[probe]["exec"]["command"]
        assert cmd[0] == "python" and cmd[-1] == check
        script = cmd[1]
        dest = os.path.relpath(script, workdir)
        assert copied.get(dest) == "deploy/healthcheck.py", f"{script} is not copied into the image"
        assert c[probe]["timeoutSeconds"] >= 1 and c[probe]["periodSeconds"] >= 10
    assert "issue 5" in (K8S / "deployment.yaml").read_text(), "say where the HTTP health endpoint is planned"


# --- the health check script --------------------------------------------------------------------


def run_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=20,
                          env={**os.environ, **env})


@pytest.fixture
def fake_worker(tmp_path: Path):
    """A process whose command line is `python .../worker.py worker`, like the container's PID 1."""
    script = tmp_path / "worker.py"
    script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script), "worker"])
    yield proc
    proc.kill()
    proc.wait()


def test_live_tells_a_running_worker_from_a_dead_one(fake_worker: subprocess.Popen) -> None:
    assert run_check("live", "--pid", str(fake_worker.pid)).returncode == 0
    # A process that is not the worker (this test runner) fails.
    other = run_check("live", "--pid", str(os.getpid()))
    assert other.returncode == 1 and "not the worker" in other.stderr
    fake_worker.kill()
    deadline = time.monotonic() + 5  # not reaped yet: a zombie
    while time.monotonic() < deadline and "Z" not in Path(f"/proc/{fake_worker.pid}/stat").read_text().rsplit(")", 1)[1][:3]:
        time.sleep(0.01)
    dead = run_check("live", "--pid", str(fake_worker.pid))
    assert dead.returncode == 1 and "zombie" in dead.stderr
    fake_worker.wait()
    assert run_check("live", "--pid", str(fake_worker.pid)).returncode == 1


def test_ready_needs_an_established_connection_to_temporal(fake_worker: subprocess.Popen) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket() as unused:
        port = server.getsockname()[1]
        unused.bind(("127.0.0.1", 0))
        unused_port = unused.getsockname()[1]
        # Listening alone is not a connection.
        assert run_check("ready", "--pid", str(fake_worker.pid), TEMPORAL_ADDRESS=f"127.0.0.1:{port}").returncode == 1
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = server.accept()
            with conn:
                ok = run_check("ready", "--pid", str(fake_worker.pid), TEMPORAL_ADDRESS=f"localhost:{port}")
                assert ok.returncode == 0, ok.stderr
                wrong = run_check("ready", "--pid", str(fake_worker.pid), TEMPORAL_ADDRESS=f"127.0.0.1:{unused_port}")
                assert wrong.returncode == 1 and "no established connection" in wrong.stderr
                # Ready also requires a live worker.
                assert run_check("ready", "--pid", str(os.getpid()), TEMPORAL_ADDRESS=f"127.0.0.1:{port}").returncode == 1
            client.close()


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_runs_the_worker_as_non_root() -> None:
    instr = dockerfile_instructions()
    ops = [op for op, _ in instr]
    users = [rest for op, rest in instr if op == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "RUN steps after USER"
    entrypoint = json.loads([rest for op, rest in instr if op == "ENTRYPOINT"][-1])
    assert entrypoint[0] == "python" and entrypoint[1].endswith("/worker.py")
    workdir = [rest for op, rest in instr if op == "WORKDIR"][-1]
    assert os.path.relpath(entrypoint[1], workdir) == "worker.py"
    cmd = json.loads([rest for op, rest in instr if op == "CMD"][-1])
    choices = re.search(r'"command".*?choices=\[([^\]]*)\]', (REPO / "worker.py").read_text(), re.S)
    assert choices and f'"{cmd[0]}"' in choices.group(1), f"CMD {cmd} is not a command of worker.py"
    assert ("STOPSIGNAL", "SIGTERM") in instr
    assert any(op == "ENV" and "FULLSTORY_DATA_DIR=/data" in rest for op, rest in instr)


def test_dockerfile_copies_what_exists_on_a_python_the_project_supports() -> None:
    instr = dockerfile_instructions()
    for op, rest in instr:
        if op == "COPY" and not rest.startswith("--from"):
            for src in rest.split()[:-1]:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository (the build context)"
    base = [rest for op, rest in instr if op == "FROM"][0]
    m = re.match(r"python:(\d+)\.(\d+)-slim", base)
    assert m, f"FROM {base}: expected a slim python image"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.match(r">=\s*(\d+)\.(\d+)", requires)
    assert floor and (int(m[1]), int(m[2])) >= (int(floor[1]), int(floor[2])), f"{base} vs requires-python {requires}"
    # The package list of the image is the project's own (pip install .), so the copied packages are
    # the ones pyproject ships.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {rest.split()[0].rstrip("/") for op, rest in instr if op == "COPY"}
    assert set(packages) <= copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignore), "keep the venv and git out of the build context"


# --- docker-compose -----------------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec() -> None:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (ships the compose-spec schema)")
    import importlib.resources

    import jsonschema

    schema = json.loads(importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def test_compose_services_fit_together() -> None:
    services = compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "simulator"} <= set(services)
    worker, sim = services["worker"], services["simulator"]
    env = compose_env(worker)
    unknown = set(env) - known_env_names()
    assert not unknown, f"not settings of activities/settings.py: {sorted(unknown)}"

    # The simulator command: real flags of `python -m simulator`, and the worker points at it.
    argv = sim["entrypoint"]
    assert argv[:3] == ["python", "-m", "simulator"]
    help_text = subprocess.run([sys.executable, "-m", "simulator", "--help"], capture_output=True, text=True,
                               cwd=REPO, timeout=20).stdout
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
    assert "service_healthy" in json.dumps(services["temporal"].get("depends_on", {})) or \
        "service_completed_successfully" in json.dumps(services["temporal"].get("depends_on", {}))
    assert "temporal" in json.dumps(worker["depends_on"])

    # Same image, graceful stop, the same data dir as the image, the same health check as Kubernetes.
    for svc in (worker, sim):
        build = svc["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    stop = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert stop and int(stop[1]) > worker_graceful_shutdown_seconds()
    assert env["FULLSTORY_DATA_DIR"] == "/data" and any(v.endswith(":/data") for v in worker["volumes"])
    assert worker["healthcheck"]["test"][1:] == container()["readinessProbe"]["exec"]["command"]


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
    proc = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")})
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
