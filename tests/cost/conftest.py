"""Helpers for cost tests: a real metered asset of a real tenant, and recorded steps."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from platform_assets.cost.metering import meter
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.limits import LIMITS_ENV, LIMITS_PATH, limits_for
from platform_assets.tenancy.specs import ComputeResources


def metered_asset(tenant: str, name: str = "work", requested: ComputeResources | None = None):
    """A small asset of `tenant` that does real work inside `meter`, like every platform asset."""
    requested = requested or ComputeResources(cpu=1, memory_gib=2)

    @dg.asset(key=[tenant, "sources", name])
    def work(pricing: PricingResource):
        with meter(tenant, requested) as usage:
            blob = bytearray(64 * 2**20)  # 64 MiB, so the peak is visibly above zero
            total = sum(i * i for i in range(300_000))
            del blob
        return dg.MaterializeResult(metadata={"total": total, **usage.metadata(pricing.catalog())})

    return work


def record_step(
    instance: dg.DagsterInstance,
    tenant: str,
    usd: float,
    asset: str = "recorded",
) -> None:
    """A real run whose one step leaves the cost metadata a metered step of `usd` would."""

    @dg.asset(key=[tenant, "sources", asset])
    def recorded():
        return dg.MaterializeResult(
            metadata={
                "cost/tenant": tenant,
                "cost/usd": usd,
                "cost/cpu_seconds": 1.0,
                "cost/measured_by": "os",
            }
        )

    assert dg.materialize([recorded], instance=instance).success


@pytest.fixture
def tenants():
    return {name: cat.tenant for name, cat in load_all().items()}


@pytest.fixture
def limits():
    """Each tenant's platform-set limits (platform_assets/limits/limits.yaml)."""
    return {name: limits_for(name) for name in load_all()}


# What the platform grants a tenant that may use one GPU per step.
GPU_GRANT = {
    "caps": {"cpu": 4, "memory_gib": 16, "gpu": 1},
    "gpu_allowed": True,
    "allowed_accelerators": ["nvidia_t4"],
}


def use_limits(monkeypatch: pytest.MonkeyPatch, path: Path, **tenants: dict) -> Path:
    """Point the platform at a copy of limits.yaml with fields of `tenants`' entries replaced."""
    doc = yaml.safe_load(LIMITS_PATH.read_text())
    for name, entry in tenants.items():
        doc["tenants"][name] = {**doc["tenants"].get(name, {}), **entry}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv(LIMITS_ENV, str(path))
    return path


def grant_override(monkeypatch: pytest.MonkeyPatch, path: Path, tenant: str) -> Path:
    """What the platform team does for a tenant that must keep running over budget."""
    budget = limits_for(tenant).budget.model_dump()
    return use_limits(monkeypatch, path, **{tenant: {"budget": {**budget, "override": True}}})


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)
