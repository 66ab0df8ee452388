"""Platform-owned limits per tenant: budget, run quota, resource caps, GPU permission and the
time and memory its feature SQL may use.

They live in `platform_assets/limits/limits.yaml`, which only the platform team may change
(.github/CODEOWNERS), never in a tenant's own YAML: a tenant can ask for resources, the platform
decides what it gets (`effective_resources`) and what it may spend.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from typing import Annotated

import dagster as dg
from pydantic import AfterValidator, Field, ValidationError

from platform_assets.tenancy.specs import (
    LIMITS_FILE,
    NAMESPACE_RE,
    Budget,
    ComputeResources,
    ModelSpec,
    Name,
    Owner,
    RequiredCheck,
    StrictBool,
    StrictInt,
    check_namespace,
)
from platform_assets.tenancy.strict_yaml import PlatformConfigError, YamlError, read_document

LIMITS_PATH = Path(__file__).resolve().parents[1] / "limits" / "limits.yaml"
# Tests and previews point the platform at another limits file, as MLPLAT_DEFS_ROOT does for
# tenant folders.
LIMITS_ENV = "MLPLAT_LIMITS"


class SqlLimits(dg.Model):
    """What one feature set's SQL may use in the DuckDB sandbox (features/sandbox.py).

    DuckDB's `memory_limit` counts its own buffers only, so a step gets at most half its granted
    memory for them (`sql_limits`): the rest is for Python and the result's conversion.
    """

    timeout_s: float = Field(
        default=300, gt=0, le=86400, allow_inf_nan=False, description="Wall time per feature set"
    )
    dry_run_timeout_s: float = Field(
        default=10,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Wall time per feature set in `mlplat validate`, over empty tables",
    )
    memory_limit_gib: float = Field(
        default=2, gt=0, le=16384, allow_inf_nan=False, description="DuckDB's memory_limit"
    )
    threads: StrictInt = Field(default=2, ge=1, le=1024, description="DuckDB's threads")
    spill_gib: float = Field(
        default=10,
        ge=0,
        le=16384,
        allow_inf_nan=False,
        description="DuckDB's max_temp_directory_size, in the connection's private temp folder",
    )


class TenantLimits(dg.Model):
    budget: Budget
    max_concurrent_runs: StrictInt = Field(ge=1, le=10000)
    caps: ComputeResources = Field(description="The most one step of the tenant may request")
    gpu_allowed: StrictBool
    sql: SqlLimits = Field(default_factory=SqlLimits)


# Every tenant's Kubernetes namespace is `tenant-<name>` (`_` as `-`: tenant names have no `-`,
# so no two names give one namespace) unless limits.yaml assigns another; the prefix is for these
# defaults only. So namespaces are unique by construction, and one tenant's location can check
# its own without reading any other tenant's folder.
NAMESPACE_PREFIX = "tenant-"


def default_namespace(tenant: str) -> str:
    return NAMESPACE_PREFIX + tenant.replace("_", "-")


class _Overrides(dg.Model):
    """A listed tenant's entry; each field it leaves out comes from the defaults."""

    budget: Budget | None = None
    max_concurrent_runs: StrictInt | None = Field(default=None, ge=1, le=10000)
    caps: ComputeResources | None = None
    gpu_allowed: StrictBool | None = None
    sql: SqlLimits | None = Field(
        default=None, description="Fields left out come from `defaults.sql`, one by one"
    )
    namespace: Annotated[str, AfterValidator(check_namespace)] | None = Field(
        default=None, description=f"Its Kubernetes namespace, when not `{NAMESPACE_PREFIX}<name>`"
    )


class PlatformTeam(dg.Model):
    owners: list[Owner] = Field(min_length=1)
    github_org: Name = Field(description="`team:<x>` owners are `@<github_org>/<x>` on GitHub")


class PromotionMinimums(dg.Model):
    """The least every model's promotion policy asks for; a model YAML asking less is refused
    at load (`check_promotion_minimums`). Defaults hold when limits.yaml sets none."""

    staging_approvals: StrictInt = Field(default=0, ge=0, le=100)
    production_approvals: StrictInt = Field(default=1, ge=0, le=100)
    required_checks: list[RequiredCheck] = Field(default_factory=lambda: ["leakage"])
    primary_metric_threshold: StrictBool = Field(
        default=True, description="`evaluation.thresholds` must bound the primary metric"
    )


class LimitsFile(dg.Model):
    platform: PlatformTeam
    defaults: TenantLimits
    tenants: dict[Name, _Overrides] = Field(default_factory=dict)
    promotion_minimums: PromotionMinimums = Field(default_factory=PromotionMinimums)

    def for_tenant(self, tenant: str) -> TenantLimits:
        entry = self.tenants.get(tenant)
        if entry is None:
            return self.defaults
        update = {k: getattr(entry, k) for k in entry.model_fields_set}
        if entry.sql is not None:
            sql = entry.sql.model_dump(exclude_unset=True)
            update["sql"] = self.defaults.sql.model_copy(update=sql)
        return self.defaults.model_copy(update={k: v for k, v in update.items() if v is not None})


def limits_path() -> Path:
    override = os.environ.get(LIMITS_ENV)
    return Path(override) if override else LIMITS_PATH


@cache
def read_limits(path: Path) -> LimitsFile:
    """The whole limits file (cached per path); a bad file names its field."""
    try:
        document = read_document(path)
        limits = LimitsFile.model_validate(document or {})
    except YamlError as exc:
        raise PlatformConfigError(path, exc.field, exc.reason) from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<file>"
        raise PlatformConfigError(path, loc, err["msg"].removeprefix("Value error, ")) from exc
    assigned: dict[str, str] = {}
    for name, entry in limits.tenants.items():
        namespace, where = entry.namespace, f"tenants.{name}.namespace"
        if namespace is None:
            continue
        if namespace.startswith(NAMESPACE_PREFIX) and namespace != default_namespace(name):
            raise PlatformConfigError(
                path,
                where,
                f"{namespace!r}: `{NAMESPACE_PREFIX}<name>` is the default namespace of the tenant "
                "of that name; an assigned namespace must not look like another tenant's default",
            )
        if namespace in assigned:
            raise PlatformConfigError(
                path, where, f"{namespace!r} is already assigned to tenant {assigned[namespace]!r}"
            )
        assigned[namespace] = name
    _check_sql_fits_caps(path, limits)
    return limits


def _check_sql_fits_caps(path: Path, limits: LimitsFile) -> None:
    """An `sql` group the file sets must fit the caps of the tenants it applies to."""
    in_defaults = "sql" in limits.defaults.model_fields_set
    entries = [("defaults", limits.defaults, in_defaults)]
    entries += [
        (f"tenants.{name}", limits.for_tenant(name), in_defaults or entry.sql is not None)
        for name, entry in limits.tenants.items()
    ]
    for where, tenant, set_here in entries:
        if not set_here:
            continue
        sql, caps = tenant.sql, tenant.caps
        if sql.memory_limit_gib > caps.memory_gib / 2:
            raise PlatformConfigError(
                path,
                f"{where}.sql.memory_limit_gib",
                f"{sql.memory_limit_gib:g} GiB is more than half the memory cap "
                f"({caps.memory_gib:g} GiB): DuckDB counts only its own buffers, and the step "
                "needs the rest",
            )
        if sql.threads > _threads_for(caps.cpu):
            raise PlatformConfigError(
                path,
                f"{where}.sql.threads",
                f"{sql.threads} threads are more than the CPU cap ({caps.cpu:g} vCPU) allows",
            )


def _threads_for(cpu: float) -> int:
    return max(1, math.ceil(cpu))


def namespace_for(tenant: str) -> str:
    """The Kubernetes namespace the platform assigns `tenant`; raises when its name gives no
    valid default and limits.yaml assigns none."""
    path = limits_path()
    entry = read_limits(path).tenants.get(tenant)
    if entry is not None and entry.namespace is not None:
        return entry.namespace
    namespace = default_namespace(tenant)
    if not NAMESPACE_RE.fullmatch(namespace):
        raise PlatformConfigError(
            path,
            f"tenants.{tenant}.namespace",
            f"tenant {tenant!r} gives no default namespace ({namespace!r} is not an RFC 1123 "
            "label): the platform must assign it one here",
        )
    return namespace


def load_limits(path: Path | None = None) -> dict[str, TenantLimits]:
    """The limits of every tenant the file lists (defaults filled in)."""
    limits = read_limits(path or limits_path())
    return {name: limits.for_tenant(name) for name in limits.tenants}


def limits_for(tenant: str) -> TenantLimits:
    """A tenant's limits; the defaults when limits.yaml does not list it."""
    return read_limits(limits_path()).for_tenant(tenant)


def effective_resources(tenant: str, requested: ComputeResources) -> ComputeResources:
    """The request capped by the tenant's caps; no GPUs unless the tenant may use them."""
    return _granted(limits_for(tenant), requested)


def _granted(limits: TenantLimits, requested: ComputeResources) -> ComputeResources:
    caps = limits.caps
    if (
        requested.cpu <= caps.cpu
        and requested.memory_gib <= caps.memory_gib
        and (requested.gpu == 0 or (limits.gpu_allowed and requested.gpu <= caps.gpu))
    ):
        return requested
    return ComputeResources(
        cpu=min(requested.cpu, caps.cpu),
        memory_gib=min(requested.memory_gib, caps.memory_gib),
        gpu=min(requested.gpu, caps.gpu) if limits.gpu_allowed else 0,
    )


def grant(tenant: str, requested: ComputeResources) -> tuple[ComputeResources, str | None]:
    """What the platform grants a request, and what it cut from it in words (asset metadata,
    step log, `validate`), or None when it granted all of it."""
    limits = limits_for(tenant)
    effective = _granted(limits, requested)
    if effective is requested:
        return requested, None
    notes = [
        f"{field} {getattr(requested, field):g} capped to {getattr(effective, field):g}"
        for field in ("cpu", "memory_gib")
        if getattr(effective, field) < getattr(requested, field)
    ]
    if requested.gpu and not limits.gpu_allowed:
        notes.append(f"gpu {requested.gpu} refused (tenant {tenant!r} may not use GPUs)")
    elif effective.gpu < requested.gpu:
        notes.append(f"gpu {requested.gpu} capped to {effective.gpu}")
    return effective, (
        f"requested resources capped by the platform's limits.yaml: {'; '.join(notes)}"
    )


def capped(tenant: str, requested: ComputeResources) -> str | None:
    """What the platform cut from a request, in words; None when it granted all of it."""
    return grant(tenant, requested)[1]


def sql_limits(tenant: str, requested: ComputeResources) -> SqlLimits:
    """The limits of one feature set's SQL in a step that asked for `requested`: limits.yaml's
    `sql`, with memory at most half of what the platform grants the step and no more threads
    than its vCPUs."""
    limits = limits_for(tenant)
    granted = _granted(limits, requested)
    sql = limits.sql
    return sql.model_copy(
        update={
            "memory_limit_gib": min(sql.memory_limit_gib, granted.memory_gib / 2),
            "threads": min(sql.threads, _threads_for(granted.cpu)),
        }
    )


def check_promotion_minimums(model: ModelSpec, path: Path) -> None:
    """Refuse a model whose promotion policy asks less than the platform's minimums, naming
    the model's file and field and the minimum it is below."""
    minimums = read_limits(limits_path()).promotion_minimums
    environments = model.promotion.environments
    for env in ("staging", "production"):
        count, least = getattr(environments, env).count, getattr(minimums, f"{env}_approvals")
        if count < least:
            raise PlatformConfigError(
                path,
                f"attributes.promotion.environments.{env}.count",
                f"{count} approval(s) is below the platform's minimum of {least} for {env} "
                f"({LIMITS_FILE}: promotion_minimums.{env}_approvals)",
            )
    missing = [c for c in minimums.required_checks if c not in model.promotion.required_checks]
    if missing:
        raise PlatformConfigError(
            path,
            "attributes.promotion.required_checks",
            f"must include {', '.join(map(repr, missing))}: the platform requires it of every "
            f"promotion ({LIMITS_FILE}: promotion_minimums.required_checks)",
        )
    metric = model.evaluation.primary_metric
    if minimums.primary_metric_threshold and metric not in model.evaluation.thresholds:
        raise PlatformConfigError(
            path,
            "attributes.evaluation.thresholds",
            f"must set a threshold for the primary metric {metric!r}: the platform promotes no "
            f"model without one ({LIMITS_FILE}: promotion_minimums.primary_metric_threshold)",
        )
