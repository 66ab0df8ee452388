"""A team's trainer environment: a virtualenv that uv builds from the dependencies of its
`code/` project, cached by what it is built from.

Only the project's dependencies are installed, never the project itself (its build backend
would run team code outside the sandbox), and only from wheels (`--only-binary :all:`: no
sdist's build script runs either). The team's source is put on the sandbox's `sys.path`
read-only instead. The runner's own needs are added: `dagster-pipes` at the platform's version,
and pandas and pyarrow (unpinned) when the project does not declare them, since the runner
reads the training split from parquet.

The cache key is a sha256 over pyproject.toml, uv.lock (if any), the platform's Python and the
runner's requirements; an environment is built into a temporary sibling and renamed into place,
under a file lock, so concurrent steps build it once and never see half of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from platform_assets.env import trainer_envs_root
from platform_assets.models.trainers.job import TrainerFailed, TrainerJob

# The runner reads parquet with these; added unpinned when the team's project lacks them.
RUNNER_DATA_PACKAGES = ("pandas", "pyarrow")
# uv's message in an error, trimmed to its end (where uv says what failed).
_UV_MESSAGE_CHARS = 2000
_BUILD_TIMEOUT_S = 1800


def runner_requirements() -> tuple[str, ...]:
    """What the runner needs beside the team's dependencies (part of the cache key)."""
    return (f"dagster-pipes=={importlib.metadata.version('dagster-pipes')}",)


def base_python() -> Path:
    """The platform's own interpreter outside any virtualenv (the sandbox binds its prefix)."""
    major, minor = sys.version_info[:2]
    return Path(sys.base_prefix) / "bin" / f"python{major}.{minor}"


def uv_bin() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    import uv  # the project dependency ships the binary

    return uv.find_uv_bin()


def trainer_environment(job: TrainerJob) -> Path:
    """The virtualenv for `job`'s project, built now unless a step already built it."""
    pyproject = job.code_dir / "pyproject.toml"
    if job.code_dir.is_symlink():
        # It would bind another folder (another tenant's code) into the sandbox.
        raise TrainerFailed(
            f"{job.where}: code/ is a symbolic link "
            f"({job.code_dir} -> {os.readlink(job.code_dir)}); it must be a folder"
        )
    if not pyproject.is_file():
        raise TrainerFailed(
            f"{job.where}: code/pyproject.toml not found "
            f"(looked in {job.code_dir}): a trainer is a Python project in the tenant's code/ "
            "folder"
        )
    lock = job.code_dir / "uv.lock"
    key = _cache_key(pyproject.read_bytes(), lock.read_bytes() if lock.is_file() else None)
    root = trainer_envs_root() / job.tenant
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    with open(root / f"{key}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not target.is_dir():
            _build(job, target)
    return target


def project_key(pyproject: bytes, lock: bytes | None, *platform: str) -> str:
    """A hash of what a tenant's environment is built from: its project's pyproject.toml and
    uv.lock, and what the platform adds (`platform`). Names its cached environment here, and
    its trainer image on Kubernetes (pod.py, `environment_key`)."""
    digest = hashlib.sha256()
    for part in (
        pyproject,
        b"\0no-lock" if lock is None else b"\0lock\0" + lock,
        *(p.encode() for p in platform),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:32]


def _cache_key(pyproject: bytes, lock: bytes | None) -> str:
    return project_key(
        pyproject,
        lock,
        f"\0{sys.version}\0{base_python()}",
        "\0".join(runner_requirements() + RUNNER_DATA_PACKAGES),
    )


def _build(job: TrainerJob, target: Path) -> None:
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        requirements = _from_the_index(job, _requirements(job))
        names = {_name(line) for line in requirements}
        extra = [p for p in RUNNER_DATA_PACKAGES if p not in names]
        req_file = building / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n")
        venv = building / "venv"
        python = str(base_python())
        _uv(job, "code/pyproject.toml", "venv", "--relocatable", "--python", python, str(venv))
        _uv(
            job,
            "code/uv.lock" if (job.code_dir / "uv.lock").is_file() else "code/pyproject.toml",
            "pip",
            "install",
            "--python",
            str(venv / "bin" / "python"),
            "--only-binary",
            ":all:",
            "-r",
            str(req_file),
            *runner_requirements(),
            *extra,
        )
        os.rename(venv, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _requirements(job: TrainerJob) -> list[str]:
    """The project's dependencies as requirement lines: the lock's exact versions if it has
    one, else `[project].dependencies` (neither builds the project)."""
    if (job.code_dir / "uv.lock").is_file():
        out = _uv(
            job,
            "code/uv.lock",
            "export",
            "--frozen",
            "--no-emit-project",
            "--no-hashes",
            "--format",
            "requirements-txt",
            cwd=job.code_dir,
        )
        return [ln for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        project = tomllib.loads((job.code_dir / "pyproject.toml").read_text())["project"]
    except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError) as exc:
        raise TrainerFailed(
            f"{job.where}: code/pyproject.toml is not a Python "
            f"project ({type(exc).__name__}: {exc})"
        ) from exc
    if "dependencies" in project.get("dynamic", []):
        raise TrainerFailed(
            f"{job.where}: code/pyproject.toml: [project] "
            "dependencies must be listed, not dynamic (the platform never builds the project)"
        )
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise TrainerFailed(
            f"{job.where}: code/pyproject.toml: [project] "
            "dependencies must be a list of requirement strings"
        )
    return deps


def _from_the_index(job: TrainerJob, requirements: list[str]) -> list[str]:
    """The requirements, each a name and versions the platform's package index serves: a URL,
    a path or an option line would have the build (outside the sandbox) fetch from wherever the
    tenant says, a host on the platform's network or a file on its disk included."""
    blamed = "code/uv.lock" if (job.code_dir / "uv.lock").is_file() else "code/pyproject.toml"
    for line in requirements:
        try:
            parsed = Requirement(line)
        except InvalidRequirement:
            parsed = None
        if parsed is None or parsed.url is not None:
            raise TrainerFailed(
                f"{job.where}: {blamed}: {line.strip()!r} is not a package of the platform's "
                "index: a trainer's dependencies are names and versions (no URL, path, git "
                "source or pip option)"
            )
    return requirements


def _name(requirement: str) -> str:
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else ""


def _uv(job: TrainerJob, blamed: str, *args: str, cwd: Path | None = None) -> str:
    """Run uv (never reading the team's uv configuration); a failure names `blamed`."""
    proc = subprocess.run(
        [uv_bin(), "--no-config", "--no-progress", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_BUILD_TIMEOUT_S,
        env={**os.environ, "UV_NO_CONFIG": "1"},
    )
    if proc.returncode != 0:
        message = proc.stderr.strip()[-_UV_MESSAGE_CHARS:]
        hint = ""
        if "source distribution" in message or "no usable wheels" in message:
            hint = (
                " (the platform installs wheels only: a dependency published only as a source "
                "distribution cannot be used; pin a version that has a wheel)"
            )
        raise TrainerFailed(
            f"{job.where}: {blamed}: the environment could not be "
            f"built{hint}: uv {args[0]} said:\n{message}"
        )
    return proc.stdout
