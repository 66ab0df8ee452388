"""The platform's own Kubernetes settings (`platform.yaml`) and the Kubernetes names tenants get.

Tenant names may contain `_`, which no Kubernetes name may: a tenant's Kubernetes name is its
name with `_` as `-` (one-to-one, since tenant names cannot contain `-`).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, model_validator

from platform_assets.tenancy.specs import ComputeResources

PLATFORM_FILE = Path(__file__).with_name("platform.yaml")
# Namespaces a tenant may never take: the cluster's own and the platform's.
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# The platform location's runner (in the platform namespace).
PLATFORM_RUNNER = "platform-runner"


class Image(BaseModel, extra="forbid"):
    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class Postgres(BaseModel, extra="forbid"):
    host: str
    port: int
    database: str
    username: str
    password_secret: str


class Egress(BaseModel, extra="forbid"):
    cidr: str
    port: int


class TrainerNetwork(BaseModel, extra="forbid"):
    egress: str  # the `egress` entry of the object store
    dns: bool


class Mlflow(BaseModel, extra="forbid"):
    namespace: str
    pod_labels: dict[str, str]
    port: int


class Platform(BaseModel, extra="forbid"):
    namespace: str
    dagster_service_account: str
    image: Image
    allowed_registries: list[str] = Field(min_length=1)
    postgres: Postgres
    egress: dict[str, Egress]
    trainer: TrainerNetwork
    mlflow: Mlflow
    run_worker: ComputeResources
    steps_per_run: int = Field(ge=1)

    @model_validator(mode="after")
    def _trainer_egress_is_listed(self) -> Platform:
        if self.trainer.egress not in self.egress:
            raise ValueError(
                f"trainer.egress: '{self.trainer.egress}' is not one of the egress entries "
                f"{sorted(self.egress)}"
            )
        return self


def platform() -> Platform:
    """The platform's settings; MLPLAT_PLATFORM points at another file (e.g. `make k8s-e2e`)."""
    return _platform(Path(os.environ.get("MLPLAT_PLATFORM") or PLATFORM_FILE))


@cache
def _platform(path: Path) -> Platform:
    return Platform.model_validate(yaml.safe_load(path.read_text()))


def k8s_name(tenant: str) -> str:
    """The tenant's name as Kubernetes names allow it (may still be invalid: policies check)."""
    return tenant.replace("_", "-")


# What each tenant's services Secret holds (the env its pods read; see execution/resources.py).
SERVICE_KEYS = (
    "MLPLAT_LAKE_URI",
    "MLPLAT_FEAST_REGISTRY_URL",
    "MLPLAT_REDIS",
    "MLFLOW_TRACKING_URI",
    "MLPLAT_MLFLOW_ARTIFACTS",
    "MLPLAT_DB_URL",
)


def services_secret(tenant: str) -> str:
    """The Secret (created by the platform, never rendered here) with the tenant's service URLs
    and credentials: MLPLAT_LAKE_URI, MLPLAT_FEAST_REGISTRY_URL, MLPLAT_REDIS, MLFLOW_TRACKING_URI,
    MLPLAT_MLFLOW_ARTIFACTS, MLPLAT_DB_URL."""
    return f"{k8s_name(tenant)}-services"


def quantity(value: float, unit: str = "") -> str:
    """A Kubernetes quantity: whole numbers as is, fractions of a CPU in milli-units."""
    if unit == "Gi":
        return f"{value:g}Gi" if float(value).is_integer() else f"{round(value * 1024)}Mi"
    return f"{value:g}" if float(value).is_integer() else f"{round(value * 1000)}m"
