"""THE IMAGE, BUILT AND RUN (marker `image`, run by `make image-test`, not by `make test`;
the unmarked tests at the end check, without an engine, how a pod spec becomes `docker run`).

A private Docker engine (scripts/docker-engine.sh: its own socket, data root and exec root, no
iptables, no bridge) builds the Dockerfile on a Debian bookworm base made with debootstrap (no
Docker Hub), with the host's CA bundle as a build secret. Then, in containers set up from what
the cluster would be given (the Helm values for the code server, dagster-k8s's own Job manifest
for the step): `mlplat validate`, a code server on a read-only root until its gRPC health check
passes, and one tenant pipeline step run from its Job's command, environment and user.

Each container gets tenant YAML only as the ConfigMaps would give it: the repository's
`platform_assets/defs` mounted read-only at MLPLAT_DEFS_ROOT. Skips, saying why, where no engine
can run; MLPLAT_REQUIRE_SERVICES=1 turns those skips into failures.
"""

from __future__ import annotations

import base64
import json
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from platform_assets.composition.locations import k8s_pipeline_jobs
from platform_assets.k8s.config import SERVICE_KEYS, platform, services_secret
from platform_assets.k8s.jobs import (
    KUBECONFIG,
    RecordingBatchApi,
    _step_jobs,
    container_context,
    launcher_instance_config,
    location_origin,
)
from platform_assets.k8s.render import helm_template, tenant_chart_values
from platform_assets.k8s.values import DAGSTER_HOME, GRPC_PORT, dagster_values, user_deployment
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.locations import code_locations
from tests.k8s.conftest import ROOT, Engine, ca_bundle, run_args

DEFS = ROOT / "platform_assets" / "defs"
DEFS_ROOT = "/etc/mlplat/defs"  # the image's MLPLAT_DEFS_ROOT, where the ConfigMaps mount
IMAGE = "mlplat:image-test"
TENANT = "ridehail"
STEP = "ridehail__sources__trips"  # the pipeline's first step with a generator: no upstream
PG_SOCKET_DIR = "/var/run/postgresql"
DEFS_MOUNT = ["--mount", f"type=bind,source={DEFS},destination={DEFS_ROOT},readonly"]
PG_PASSWORD = "unchecked: the socket trusts local users"


@pytest.fixture(scope="session")
def image(engine: Engine, base_image: str) -> str:
    return engine.build("image", IMAGE, ROOT, "--build-arg", f"PYTHON_IMAGE={base_image}")


def pem_blocks(text: str) -> set[str]:
    marker = "-----END CERTIFICATE-----"
    return {block.strip() + "\n" + marker for block in text.split(marker) if "BEGIN" in block}


@pytest.mark.image
def test_the_host_ca_is_used_to_build_but_is_not_in_the_image_or_its_history(
    engine, image, tmp_path
):
    started = time.monotonic()
    host = pem_blocks(ca_bundle().read_text())
    inside = engine(
        "run", "--rm", "--network", "none", image, "cat", "/etc/ssl/certs/ca-certificates.crt"
    )
    extra = sorted(host - pem_blocks(inside.stdout))
    if not extra:
        pytest.skip("this host trusts no CA beyond Debian's: nothing the image could have kept")
    # One base64 line of each certificate only this host trusts, as it would sit in any file.
    needles = {cert.splitlines()[3].encode() for cert in extra}
    history = engine("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "ca.pem" not in history.replace("/run/secrets/ca.pem", "")
    assert not any(n.decode() in history for n in needles)
    saved = tmp_path / "image.tar"
    engine("save", "--output", str(saved), image)
    with tarfile.open(saved) as outer:
        for layer in (m for m in outer.getmembers() if m.name.endswith("layer.tar")):
            with tarfile.open(fileobj=outer.extractfile(layer)) as files:
                for member in files:
                    if not member.isfile():
                        continue
                    data = files.extractfile(member).read()
                    found = [n for n in needles if n in data]
                    assert not found, f"{member.name} in {layer.name} holds the host's CA"
    engine.timed("ca_check_s", started)


def platform_run_args(*spec: Any) -> list[str]:
    """`run_args(*spec)` for a platform container (`spec[1]`): its tenant YAML comes from the
    declared mount at the defs root, or, where the values declare none, from the repository's
    folder mounted there read-only."""
    args = run_args(*spec)
    if all(m["mountPath"] != DEFS_ROOT for m in spec[1].get("volumeMounts") or []):
        args += DEFS_MOUNT
    return args


def rendered_configmaps(tenants: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    """Every ConfigMap our tenant chart renders for these tenants: what the namespaces hold."""
    found: dict[str, dict[str, bytes]] = {}
    for name, spec in tenants.items():
        for manifest in helm_template(tenant_chart_values(name, spec)):
            if manifest["kind"] == "ConfigMap":
                data = {k: v.encode() for k, v in (manifest.get("data") or {}).items()}
                binary = manifest.get("binaryData") or {}
                data.update({k: base64.b64decode(v) for k, v in binary.items()})
                found[manifest["metadata"]["name"]] = data
    return found


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def environment(container: dict[str, Any], objects: dict[str, dict[str, dict[str, str]]]):
    """The container's env as the kubelet resolves it: envFrom, then env (values or keys)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = next(iter(source.items()))
        data = objects["configmaps" if kind == "configMapRef" else "secrets"][ref["name"]]
        env.update({key: text(value) for key, value in data.items()})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            kind, ref = next(iter(var["valueFrom"].items()))
            plural = "secrets" if kind == "secretKeyRef" else "configmaps"
            env[var["name"]] = text(objects[plural][ref["name"]][ref["key"]])
    return [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]


@pytest.mark.image
def test_mlplat_validate_runs_in_the_image_on_the_mounted_tenant_yaml(engine, image):
    started = time.monotonic()
    out = engine(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", *DEFS_MOUNT,
        image, "mlplat", "validate", check=False,
    )  # fmt: skip
    engine.timed("validate_s", started)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ok: {len(load_all())} tenants valid" in out.stdout
    # No tenant YAML in the image itself: it comes from the mounted ConfigMaps only.
    baked = engine("run", "--rm", "--network", "none", image, "ls", "/app/platform_assets")
    assert "defs" not in baked.stdout.split()


def services(tmp: Path, dagster_db: str) -> dict[str, str]:
    """The tenant's services Secret for a container on `--network none`: the lake and the
    MLflow artifacts on a mounted folder (S3 on a cluster), Postgres through its socket."""
    socket_url = f"postgresql+psycopg2://postgres@/{{}}?host={PG_SOCKET_DIR}"
    return {
        "MLPLAT_LAKE_URI": "/data/lake",
        "MLPLAT_FEAST_REGISTRY_URL": socket_url.format(dagster_db),
        "MLPLAT_REDIS": "127.0.0.1:6379,db=0",  # not reachable: a step that needs it fails
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",  # likewise
        "MLPLAT_MLFLOW_ARTIFACTS": "/data/mlflow",
        "MLPLAT_DB_URL": socket_url.format(dagster_db),
    }


@pytest.fixture
def database(postgres_url) -> Iterator[str]:
    name = f"mlplat_image_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    admin.cursor().execute(f"create database {name}")
    try:
        yield name
    finally:
        admin.cursor().execute(f"drop database {name} with (force)")
        admin.close()


def namespace_objects(location, tenants, database: str, tmp: Path) -> dict[str, dict]:
    """What the tenant's namespace holds for its pods: our chart's ConfigMaps as helm renders
    them, the user-deployments chart's env ConfigMaps (empty: the values give env as a list),
    and the Secrets the platform creates."""
    env_maps = container_context(location, tenants)["k8s"]["env_config_maps"]
    return {
        "configmaps": {**dict.fromkeys(env_maps, {}), **rendered_configmaps(tenants)},
        "secrets": {
            platform().postgres.password_secret: {"postgresql-password": PG_PASSWORD},
            services_secret(TENANT): services(tmp, database),
        },
    }


@pytest.mark.image
def test_code_server_passes_its_health_check_on_a_read_only_root(
    engine, image, helm, database, tmp_path
):
    tenants = {n: c.tenant for n, c in load_all().items()}
    [location] = [loc for loc in code_locations() if loc.tenants == (TENANT,)]
    deployment = user_deployment(location, tenants)
    # The container the dagster-user-deployments chart renders from these values.
    container = {
        "env": [
            *deployment["env"],
            {"name": "DAGSTER_CURRENT_IMAGE", "value": image},
            {"name": "DAGSTER_HOME", "value": DAGSTER_HOME},
            {
                "name": "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT",
                "value": json.dumps(container_context(location, tenants)),
            },
        ],
        "envFrom": [{"secretRef": s} for s in deployment["envSecrets"]],
        "securityContext": deployment["securityContext"],
        "volumeMounts": deployment["volumeMounts"],
    }
    objects = namespace_objects(location, tenants, database, tmp_path)
    name = f"mlplat-code-server-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    engine(
        "run", "--detach", "--name", name, "--network", "none",
        *platform_run_args(deployment["podSecurityContext"], container, deployment["volumes"],
                  objects["configmaps"], tmp_path / "volumes"),
        *environment(container, objects),
        image, "dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"]),
        *deployment["dagsterApiGrpcArgs"],
    )  # fmt: skip
    try:
        while True:
            # The chart's readiness probe, run in the container as the kubelet runs it.
            probe = ["exec", name, "dagster", "api", "grpc-health-check", "-p", str(GRPC_PORT)]
            if engine(*probe, check=False).returncode == 0:
                break
            state = engine("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
            logs = engine("logs", name, check=False)
            assert state == "running", f"code server exited:\n{(logs.stdout + logs.stderr)[-3000:]}"
            assert time.monotonic() - started < 300, "no healthy code server in 300 s"
            time.sleep(2)
        engine.timed("code_server_healthy_s", started)
    finally:
        engine("rm", "--force", name, check=False)


@pytest.mark.image
def test_a_pipeline_step_runs_from_its_k8s_job(
    engine, image, helm, database, tmp_path, monkeypatch
):
    """The Job dagster-k8s's step handler submits for the step, run as the kubelet would: its
    command and args, env (with envFrom resolved from the ConfigMaps and Secrets the cluster
    holds), user and security context, and volumes (the instance ConfigMap at DAGSTER_HOME).
    The network is none: the Dagster instance's Postgres is reached through its unix socket
    (bind-mounted), the lake is a mounted folder (S3 on a cluster)."""
    catalogs = load_all()
    tenants = {n: c.tenant for n, c in catalogs.items()}
    job, location = k8s_pipeline_jobs(catalogs)[f"{TENANT}_pipeline"]
    chart_pg = dagster_values(tenants, code_locations())["postgresql"]
    # The instance a run worker has on the cluster: the chart's dagster.yaml (its `postgres_db`
    # from the values, the password from the Secret's env; no compute logs and local artifacts
    # left at their defaults), Postgres reached through its socket instead of over TLS. The step
    # Job mounts no instance config: the instance's ref travels in the step's args.
    instance_yaml = {
        "telemetry": {"enabled": False},
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": "postgres",
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "hostname": "localhost",
                    "db_name": database,
                    "port": 5432,
                    "params": {"host": PG_SOCKET_DIR},
                    "scheme": chart_pg["postgresqlScheme"],
                }
            }
        },
    }
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PG_PASSWORD)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    instance_yaml["run_launcher"] = launcher_instance_config(kubeconfig)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(json.dumps(instance_yaml))
    recorder = RecordingBatchApi()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        code_origin, remote_origin = location_origin(location, tenants, job.name)
        run = instance.create_run_for_job(
            job, tags=dict(job.tags), job_code_origin=code_origin, remote_job_origin=remote_origin
        )
        steps = _step_jobs(instance, job, run, recorder)
        manifest = recorder.jobs[steps.index(STEP)]
        run_id = run.run_id
        pod = manifest["spec"]["template"]["spec"]
        [container] = pod["containers"]
        data = tmp_path / "data"
        data.mkdir(mode=0o777)
        os.chmod(data, 0o777)  # the pod's user writes there, as to its bucket
        objects = namespace_objects(location, tenants, database, tmp_path)
        assert set(objects["secrets"][services_secret(TENANT)]) == set(SERVICE_KEYS)
        started = time.monotonic()
        out = engine(
            "run", "--rm", "--network", "none",
            "--workdir", container.get("workingDir") or "/app",
            *platform_run_args(pod.get("securityContext") or {}, container,
                               pod.get("volumes") or [], objects["configmaps"],
                               tmp_path / "volumes"),
            *environment(container, objects),
            "--mount", f"type=bind,source={PG_SOCKET_DIR},destination={PG_SOCKET_DIR}",
            "--mount", f"type=bind,source={data},destination=/data",
            image, *container.get("command", []), *container.get("args", []),
            check=False, timeout=900,
        )  # fmt: skip
        engine.timed("step_s", started)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        events = instance.all_logs(run_id)
    succeeded = {e.step_key for e in events if e.dagster_event and e.dagster_event.is_step_success}
    assert succeeded == {STEP}
    assert any((data / "lake").rglob("*")), "the step wrote nothing to the lake"


POD_SECURITY = {"runAsUser": 10001, "runAsGroup": 10001}


def test_a_pod_spec_becomes_docker_run_options_with_configmaps_laid_out_as_the_kubelet_does(
    tmp_path,
):
    container = {
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "defs", "mountPath": DEFS_ROOT, "readOnly": True},
        ],
    }
    volumes = [
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "defs",
            "projected": {
                "sources": [
                    {
                        "configMap": {
                            "name": "mlplat-defs-ridehail",
                            "items": [
                                {"key": "tenant--defs.yaml", "path": "ridehail/tenant/defs.yaml"}
                            ],
                        }
                    }
                ]
            },
        },
    ]
    maps = {"mlplat-defs-ridehail": {"tenant--defs.yaml": b"type: x\n"}}
    args = platform_run_args(POD_SECURITY, container, volumes, maps, tmp_path)
    folder = tmp_path / "defs"
    assert args == [
        "--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777",
        "--mount", f"type=bind,source={folder},destination={DEFS_ROOT},readonly",
    ]  # fmt: skip
    assert (folder / "..data").is_symlink() and (folder / "ridehail").is_symlink()
    assert (folder / "ridehail" / "tenant" / "defs.yaml").read_bytes() == b"type: x\n"
    # Without a declared mount at the defs root, the repository's folder stands in for it.
    assert platform_run_args({}, {}, [], {}, tmp_path)[-2:] == DEFS_MOUNT[-2:]


def test_a_volume_kind_the_test_cannot_reproduce_is_refused(tmp_path):
    container = {"volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets"}]}
    volumes = [{"name": "token", "hostPath": {"path": "/"}}]
    with pytest.raises(AssertionError, match="volume token: not emptyDir, ConfigMap or projected"):
        platform_run_args({}, container, volumes, {}, tmp_path)


def test_a_configmap_the_namespace_does_not_hold_is_named(tmp_path):
    container = {"volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}
    volumes = [{"name": "cfg", "configMap": {"name": "nowhere"}}]
    with pytest.raises(AssertionError, match="ConfigMap nowhere is not in the namespace"):
        platform_run_args({}, container, volumes, {}, tmp_path)
