"""Where the platform runs, decided in one place from one variable (MLPLAT_ENV).

`local` (the default) keeps everything on this machine; `services` uses Postgres and Redis;
`k8s` runs every step as a Kubernetes job. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Deployment = Literal["local", "services", "k8s"]
DEPLOYMENTS: tuple[Deployment, ...] = ("local", "services", "k8s")


def deployment() -> Deployment:
    value = os.environ.get("MLPLAT_ENV", "local")
    if value not in DEPLOYMENTS:
        raise ValueError(f"MLPLAT_ENV={value!r} is not one of {', '.join(DEPLOYMENTS)}")
    return value  # type: ignore[return-value]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Lake, Feast repos and MLflow store for the embedded deployment."""
    return Path(os.environ.get("MLPLAT_DATA", repo_root() / ".data")).resolve()


def trainer_envs_root() -> Path:
    """Where team trainers' environments are built and cached (by their project's lock):
    MLPLAT_TRAINER_ENVS, else `trainer-envs` in the data root. Shared safely by any number of
    data roots on one machine: an environment is a pure function of its key."""
    override = os.environ.get("MLPLAT_TRAINER_ENVS")
    return Path(override).resolve() if override else data_root() / "trainer-envs"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", repo_root() / ".dagster_home")).resolve()


def platform_db_url() -> str:
    """The platform's own database (audit trail, approvals)."""
    url = os.environ.get("MLPLAT_DB_URL")
    if url:
        return url
    if deployment() != "local":
        # A SQLite file inside a pod or on one host would split the audit trail.
        raise ValueError("MLPLAT_DB_URL must be set when MLPLAT_ENV is 'services' or 'k8s'")
    return f"sqlite:///{data_root() / 'platform.db'}"
