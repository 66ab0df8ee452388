"""Shared for the Kubernetes tests: tools they need (skip only when truly absent, fail under
MLPLAT_REQUIRE_SERVICES=1), one render of everything per test session worker, and for the
images built and run (marker `image`) the private Docker engine and its local base image."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "docker-engine.sh"
TIMINGS = ROOT / ".tools" / "image-test" / "timings.json"
BUILDKIT_SESSION_LOST = "rpc error: code = Internal desc = unexpected EOF"


def require(tool: str, reason: str) -> None:
    message = f"{tool} is not available: {reason}"
    if os.environ.get("MLPLAT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (MLPLAT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> str:
    from platform_assets.k8s.helm import ToolMissing, helm_binary

    try:
        return helm_binary()
    except ToolMissing as exc:
        require("helm", str(exc))


@pytest.fixture(scope="session")
def chart_schemas():
    """The Dagster chart's values schemas, found as `mlplat k8s values` finds them (CI has them
    in shared/dagster-helm beside its clone)."""
    from platform_assets.k8s.schemas import dagster_chart_schemas

    with dagster_chart_schemas() as schemas:
        if not schemas.found:
            require("the Dagster chart's values schemas", schemas.source)
        yield schemas


@dataclass(frozen=True)
class Rendered:
    out: Path
    output: str


@pytest.fixture(scope="session")
def rendered(helm, tmp_path_factory) -> Rendered:
    """`mlplat k8s render --out DIR` for the demo tenants, once per test worker."""
    from typer.testing import CliRunner

    from platform_assets.cli.main import app

    out = tmp_path_factory.mktemp("k8s") / "out"
    result = CliRunner().invoke(app, ["k8s", "render", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Rendered(out, result.output)


def ca_bundle() -> Path:
    """The CA bundle this host trusts (behind a TLS-intercepting proxy it has the proxy's CA)."""
    return Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")


@dataclass
class Engine:
    env: dict[str, str]
    docker: str
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 600, check: bool = True):
        out = subprocess.run(
            [self.docker, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            pytest.fail(f"docker {' '.join(args[:3])} ... failed:\n{out.stdout}\n{out.stderr}")
        return out

    def timed(self, name: str, started: float) -> None:
        """Record a duration in the session's timings file (all image tests share one)."""
        self.timings[name] = round(time.monotonic() - started, 1)
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(json.dumps(self.timings, indent=2) + "\n")

    def build(self, name: str, tag: str, context: Path, *options: str) -> str:
        """`docker build` of `context` as `tag`, the host's CA as the `ca` build secret; its
        time and the image's size go in the timings as `<name>_build_s` and `<name>_mb`."""
        started = time.monotonic()
        self.env["DOCKER_BUILDKIT"] = "1"  # for the build secret; Debian's engine has BuildKit
        build = (
            "build", "--network", "host", "--secret", f"id=ca,src={ca_bundle()}",
            *options, "--tag", tag, str(context),
        )  # fmt: skip
        out = self(*build, timeout=1800, check=False)
        if out.returncode and BUILDKIT_SESSION_LOST in out.stdout + out.stderr:
            # Debian's engine (20.10) sometimes loses the build's session on the first build
            # after it starts (seen once in CI-like runs: a secret-mounting RUN fails at once
            # with this). That is the engine, not the Dockerfile: build again, once, and say so.
            self.timings[f"{name}_build_retried_after_session_loss"] = 1
            out = self(*build, timeout=1800, check=False)
        if out.returncode:
            pytest.fail(f"docker build of {tag} failed:\n{out.stdout}\n{out.stderr}")
        size = self("image", "inspect", tag, "--format", "{{.Size}}").stdout
        self.timings[f"{name}_mb"] = round(int(size) / 1e6)
        self.timed(f"{name}_build_s", started)
        return tag


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The private engine, started here and stopped after the session (unless it was already
    running, e.g. started by hand with `scripts/docker-engine.sh start`)."""
    env = {**os.environ, "DOCKER": "/usr/bin/docker"}
    state = Path(os.environ.get("MLPLAT_ENGINE_DIR") or ROOT / ".tools" / "docker")
    env["DOCKER_HOST"] = f"unix://{state / 'docker.sock'}"
    # Debian's client, installed with the engine by the script when missing.
    was_running = Path(env["DOCKER"]).exists() and (
        subprocess.run([env["DOCKER"], "info"], env=env, capture_output=True).returncode == 0
    )
    if not was_running:
        started = subprocess.run(
            [str(ENGINE_SCRIPT), "start"], env=env, capture_output=True, text=True
        )
        if started.returncode != 0:
            require("a Docker engine", f"{ENGINE_SCRIPT.name} start: {started.stderr[-1500:]}")
    yield Engine(env=env, docker=env["DOCKER"])
    if not was_running:
        subprocess.run([str(ENGINE_SCRIPT), "stop"], env=env, capture_output=True)


@pytest.fixture(scope="session")
def base_image(engine: Engine) -> str:
    """The bookworm + Debian python3 base every image here builds on (no Docker Hub)."""
    started = time.monotonic()
    base = subprocess.run(
        [str(ENGINE_SCRIPT), "base"], env=engine.env, capture_output=True, text=True
    )
    assert base.returncode == 0, base.stderr
    engine.timed("base_image_s", started)
    return base.stdout.strip()


def kubelet_files(folder: Path, files: dict[str, bytes]) -> Path:
    """A ConfigMap volume's folder as the kubelet writes it: the files in a timestamped folder,
    `..data` a link to it, and each top-level entry a link through `..data`."""
    stamp = folder / "..2026_01_01_00_00_00.000000000"
    for path, content in files.items():
        (stamp / path).parent.mkdir(parents=True, exist_ok=True)
        (stamp / path).write_bytes(content)
    (folder / "..data").symlink_to(stamp.name)
    for top in {path.split("/")[0] for path in files}:
        (folder / top).symlink_to(f"..data/{top}")
    return folder


def configmap_files(source: dict[str, Any], configmaps: dict[str, dict[str, bytes]]):
    """{path: bytes} of one `configMap` volume or projected source (its `items`, or every key)."""
    name = source["name"]
    assert name in configmaps, f"ConfigMap {name} is not in the namespace (rendered charts)"
    data = configmaps[name]
    items = source.get("items") or [{"key": key, "path": key} for key in data]
    return {item["path"]: data[item["key"]] for item in items}


def run_args(
    pod_security: dict[str, Any],
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    configmaps: dict[str, dict[str, bytes]],
    files: Path,
) -> list[str]:
    """`docker run` options for a container as Kubernetes would start it from its spec: user,
    read-only root, capabilities and privilege escalation from the security contexts; CPU and
    memory limits; emptyDir volumes as tmpfs (of their size limit), ConfigMap and projected
    ConfigMap volumes as read-only folders laid out as the kubelet does. Anything else is
    refused, so a new kind of mount in the values fails here instead of being left out."""
    from kubernetes.utils import parse_quantity

    security = container.get("securityContext") or {}
    args: list[str] = []
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in (security.get("capabilities") or {}).get("drop") or []:
        args += ["--cap-drop", cap]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "cpu" in limits:
        args += ["--cpus", str(parse_quantity(limits["cpu"]))]
    if "memory" in limits:
        args += ["--memory", str(int(parse_quantity(limits["memory"])))]
    by_name = {v["name"]: v for v in volumes}
    for mount in container.get("volumeMounts") or []:
        volume = by_name[mount["name"]]
        target = mount["mountPath"]
        folder = files / volume["name"]
        if "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            size_opt = f",tmpfs-size={int(parse_quantity(size))}" if size else ""
            args += ["--mount", f"type=tmpfs,destination={target},tmpfs-mode=1777{size_opt}"]
            continue
        if "configMap" in volume:
            content = configmap_files(volume["configMap"], configmaps)
        elif "projected" in volume:
            sources = volume["projected"]["sources"]
            assert all(set(s) == {"configMap"} for s in sources), f"{volume['name']}: {sources}"
            content = {}
            for source in sources:
                content.update(configmap_files(source["configMap"], configmaps))
        else:
            raise AssertionError(f"volume {volume['name']}: not emptyDir, ConfigMap or projected")
        folder.mkdir(parents=True)
        kubelet_files(folder, content)
        source = folder / mount["subPath"] if mount.get("subPath") else folder
        args += ["--mount", f"type=bind,source={source},destination={target},readonly"]
    return args
