"""Platform-owned limits per tenant (`platform_assets/limits/limits.yaml`): budget, concurrent
runs, compute caps and GPU access. Tenant YAML cannot raise them."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from platform_assets.tenancy.specs import Budget, ComputeResources

LIMITS_FILE = Path(__file__).resolve().parents[1] / "limits" / "limits.yaml"


class TenantLimits(BaseModel, extra="forbid"):
    budget: Budget
    max_concurrent_runs: int = Field(ge=1)
    caps: ComputeResources
    gpu_allowed: bool = False


class LimitsFile(BaseModel, extra="forbid"):
    defaults: TenantLimits
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)


def limits_path() -> Path:
    """The limits file; MLPLAT_LIMITS points elsewhere (tests, previews)."""
    override = os.environ.get("MLPLAT_LIMITS")
    return Path(override) if override else LIMITS_FILE


@cache
def _load(path: Path) -> LimitsFile:
    try:
        return LimitsFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{path}: {where}: {err['msg']}") from exc


def load_limits(path: Path | None = None) -> dict[str, TenantLimits]:
    """Limits of every listed tenant (cached per path)."""
    return dict(_load((path or limits_path()).resolve()).tenants)


def limits_for(tenant: str) -> TenantLimits:
    limits = _load(limits_path().resolve())
    return limits.tenants.get(tenant, limits.defaults)


def effective_resources(tenant: str, requested: ComputeResources) -> ComputeResources:
    """The request capped by the tenant's caps; no GPUs unless the tenant may use them."""
    limits = limits_for(tenant)
    caps = limits.caps
    return ComputeResources(
        cpu=min(requested.cpu, caps.cpu),
        memory_gib=min(requested.memory_gib, caps.memory_gib),
        gpu=min(requested.gpu, caps.gpu) if limits.gpu_allowed else 0,
    )
