"""A team's trainer environment: built by uv from its project's dependencies (the project itself
never built), cached by what it is built from, and each bad project named in its error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from platform_assets.models.trainers.environment import trainer_environment, uv_bin
from platform_assets.models.trainers.job import TrainerFailed
from tests.models.trainers.conftest import make_job, write_code

# A build backend that would run the team's code if the platform ever built the project.
HOSTILE_BUILD = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "ridehail-models"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [{deps}]
"""


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLAT_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _installed(env: Path) -> dict[str, str]:
    out = subprocess.run(
        [uv_bin(), "pip", "list", "--python", str(env / "bin" / "python"), "--format", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("==") for line in out.split())


def test_locked_project_installs_its_lock_and_not_itself(tmp_path: Path, data: Path) -> None:
    code = write_code(tmp_path, "", HOSTILE_BUILD.format(deps='"six>=1.15"'))
    subprocess.run([uv_bin(), "lock", "--exclude-newer", "2024-01-01"], cwd=code, check=True)
    env = trainer_environment(make_job(code))
    installed = _installed(env)
    assert installed["six"] == "1.16.0"  # the lock's version, not the newest
    assert {"dagster-pipes", "pandas", "pyarrow"} <= installed.keys()
    assert "ridehail-models" not in installed
    assert env.parent == data / "trainer-envs" / "ridehail"

    # Cached: the same project gives the same environment, a change in the lock another one.
    assert trainer_environment(make_job(code)) == env
    subprocess.run([uv_bin(), "lock", "--upgrade"], cwd=code, check=True)
    assert trainer_environment(make_job(code)) != env


def test_no_code_folder(tmp_path: Path, data: Path) -> None:
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(tmp_path / "code"))
    assert str(exc.value).startswith(
        "platform_assets/defs/ridehail/models/retention.yaml: trainer "
        "ridehail_models.retention:train: code/pyproject.toml not found"
    )


def test_dependency_that_does_not_resolve(tmp_path: Path, data: Path) -> None:
    code = write_code(tmp_path, "", HOSTILE_BUILD.format(deps='"mlplat-no-such-package-xyz"'))
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(code))
    message = " ".join(str(exc.value).split())  # uv wraps its lines at its terminal's width
    assert "code/pyproject.toml: the environment could not be built: uv pip said:" in message
    assert "mlplat-no-such-package-xyz was not found in the package registry" in message
    assert not list((data / "trainer-envs" / "ridehail").glob("*/")), "no half-built env kept"


def test_dependency_only_available_as_sdist(tmp_path: Path, data: Path) -> None:
    code = write_code(tmp_path, "", HOSTILE_BUILD.format(deps='"sgmllib3k"'))
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(code))
    message = str(exc.value)
    assert "code/pyproject.toml: the environment could not be built (the platform installs " in (
        message
    )
    assert "sgmllib3k==1.0.0 has no usable wheels" in message


def test_unreadable_lock_is_blamed(tmp_path: Path, data: Path) -> None:
    code = write_code(tmp_path, "", HOSTILE_BUILD.format(deps='"sgmllib3k"'))
    (code / "uv.lock").write_text("version = 1\nthis is not a lock\n")
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(code))
    assert "code/uv.lock: the environment could not be built: uv export said:" in str(exc.value)


def test_dynamic_dependencies(tmp_path: Path, data: Path) -> None:
    code = write_code(
        tmp_path, "", '[project]\nname = "x"\nversion = "0"\ndynamic = ["dependencies"]\n'
    )
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(code))
    assert "code/pyproject.toml: [project] dependencies must be listed, not dynamic" in str(
        exc.value
    )


def test_code_folder_that_is_a_link(tmp_path: Path, data: Path) -> None:
    other = write_code(tmp_path / "other_tenant", "")
    (tmp_path / "ridehail").mkdir()
    (tmp_path / "ridehail" / "code").symlink_to(other)
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(tmp_path / "ridehail" / "code"))
    assert f"code/ is a symbolic link ({tmp_path / 'ridehail' / 'code'} -> {other})" in str(
        exc.value
    )


@pytest.mark.parametrize(
    "dependency",
    [
        "lightgbm @ https://169.254.169.254/latest/meta-data/lightgbm.whl",
        "secrets @ file:///work/main/.data/platform.db",
        "mine @ git+https://example.com/mine.git",
    ],
)
def test_a_dependency_from_a_url_or_path_is_refused(tmp_path: Path, data: Path, dependency):
    """The build runs outside the sandbox, on the platform's network and disk: it fetches only
    names and versions from the platform's index, never where the tenant points."""
    code = write_code(tmp_path, "", HOSTILE_BUILD.format(deps=f'"{dependency}"'))
    with pytest.raises(TrainerFailed) as exc:
        trainer_environment(make_job(code))
    assert str(exc.value).endswith(
        f"code/pyproject.toml: {dependency!r} is not a package of the platform's index: a "
        "trainer's dependencies are names and versions (no URL, path, git source or pip option)"
    )
    assert not list((data / "trainer-envs" / "ridehail").glob("*/")), "no half-built env kept"
