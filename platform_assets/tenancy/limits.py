"""Platform-owned limits per tenant: budget, run quota, resource caps, GPU permission, the
time and memory its feature SQL may use, and the catalog of accelerator classes and node
pools a tenant's steps may ask for.

They live in `platform_assets/limits/limits.yaml`, which only the platform team may change
(.github/CODEOWNERS), never in a tenant's own YAML: a tenant can ask for resources, the platform
decides what it gets (`effective_resources`) and what it may spend.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import AfterValidator, Field, ValidationError, model_validator

from platform_assets.tenancy.specs import (
    LIMITS_FILE,
    NAMESPACE_RE,
    Budget,
    ComputeResources,
    Hours,
    ModelSpec,
    Name,
    Owner,
    RequiredCheck,
    StepResources,
    StrictBool,
    StrictInt,
    check_k8s_name,
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


class TrainerLimits(dg.Model):
    """What a team's own training code may use in its sandbox or pod (models/trainers/), beside
    the CPU and memory the platform grants its model step (`granted`)."""

    timeout_s: float = Field(
        default=900, gt=0, le=86400, allow_inf_nan=False, description="Wall time per training"
    )
    artifact_mib: float = Field(
        default=64, gt=0, le=4096, allow_inf_nan=False, description="Size cap of the model file"
    )
    tmp_mib: float = Field(
        default=512,
        gt=0,
        le=65536,
        allow_inf_nan=False,
        description="Scratch space (/tmp and the output folder), held in the sandbox's memory",
    )


class RetrainLimits(dg.Model):
    """How often drift may retrain a model (monitoring/sensors.py): the bounds of the cooldown
    a model's YAML may set (`monitoring.retrain_cooldown_hours`)."""

    min_cooldown_hours: Hours = Field(
        default=1,
        description="The shortest cooldown a model may set: retrains cost the tenant's budget",
    )
    max_cooldown_hours: Hours = Field(
        default=720,
        description="The longest: a drifting model must not go unretrained longer than this",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetrainLimits:
        if self.disorder():
            raise ValueError(self.disorder())
        return self

    def disorder(self) -> str | None:
        """Why these bounds leave no cooldown to set, or None."""
        if self.min_cooldown_hours <= self.max_cooldown_hours:
            return None
        return (
            f"min_cooldown_hours {self.min_cooldown_hours:g} is above max_cooldown_hours "
            f"{self.max_cooldown_hours:g}"
        )


# A Kubernetes label key (optional DNS prefix and `/`) or value; the catalog's node selectors
# and tolerations use them.
LABEL_KEY = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
LabelKey = Annotated[str, Field(pattern=f"^{LABEL_KEY}$", max_length=316)]
LabelValue = Annotated[str, Field(pattern=f"^{LABEL_VALUE}$")]


class Toleration(dg.Model):
    """A taint the platform's nodes carry, tolerated by the steps placed on them."""

    key: LabelKey
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Accelerator(dg.Model):
    """An accelerator class: the extended resource its GPUs are requested as and where the
    nodes that have them are."""

    description: str
    resource: str = Field(pattern=f"^{LABEL_KEY}$", description="e.g. nvidia.com/gpu")
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class NodePool(dg.Model):
    """A pool of nodes steps may be placed on, with the priority class its steps run at."""

    description: str
    node_selector: dict[LabelKey, LabelValue] = Field(min_length=1)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class: Annotated[str, AfterValidator(check_k8s_name)] | None = None


class Catalog(dg.Model):
    accelerators: dict[Name, Accelerator] = Field(default_factory=dict)
    node_pools: dict[Name, NodePool] = Field(default_factory=dict)


class TenantLimits(dg.Model):
    budget: Budget
    max_concurrent_runs: StrictInt = Field(ge=1, le=10000)
    caps: ComputeResources = Field(description="The most one step of the tenant may request")
    gpu_allowed: StrictBool
    sql: SqlLimits = Field(default_factory=SqlLimits)
    trainer: TrainerLimits = Field(default_factory=TrainerLimits)
    retrain: RetrainLimits = Field(default_factory=RetrainLimits)
    allowed_accelerators: list[Name] = Field(
        default_factory=list, description="Accelerator classes (catalog) its GPU steps may use"
    )
    allowed_node_pools: list[Name] = Field(
        default_factory=list, description="Node pools (catalog) its steps may ask for"
    )


# Every tenant's Kubernetes namespace is `tenant-<name>` (`_` as `-`: tenant names have no `-`,
# so no two names give one namespace) unless limits.yaml assigns another; the prefix is for these
# defaults only. So namespaces are unique by construction, and one tenant's location can check
# its own without reading any other tenant's folder.
NAMESPACE_PREFIX = "tenant-"


def default_namespace(tenant: str) -> str:
    return NAMESPACE_PREFIX + tenant.replace("_", "-")


class _RetrainOverrides(dg.Model):
    """A tenant's `retrain` entry; merged with the defaults, its bounds must still be in order
    (`read_limits`)."""

    min_cooldown_hours: Hours | None = None
    max_cooldown_hours: Hours | None = None


class _Overrides(dg.Model):
    """A listed tenant's entry; each field it leaves out comes from the defaults."""

    budget: Budget | None = None
    max_concurrent_runs: StrictInt | None = Field(default=None, ge=1, le=10000)
    caps: ComputeResources | None = None
    gpu_allowed: StrictBool | None = None
    sql: SqlLimits | None = Field(
        default=None, description="Fields left out come from `defaults.sql`, one by one"
    )
    trainer: TrainerLimits | None = Field(
        default=None, description="Fields left out come from `defaults.trainer`, one by one"
    )
    retrain: _RetrainOverrides | None = Field(
        default=None, description="Fields left out come from `defaults.retrain`, one by one"
    )
    allowed_accelerators: list[Name] | None = None
    allowed_node_pools: list[Name] | None = None
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
    catalog: Catalog = Field(default_factory=Catalog)

    def for_tenant(self, tenant: str) -> TenantLimits:
        entry = self.tenants.get(tenant)
        if entry is None:
            return self.defaults
        update = {k: getattr(entry, k) for k in entry.model_fields_set}
        if entry.sql is not None:
            sql = entry.sql.model_dump(exclude_unset=True)
            update["sql"] = self.defaults.sql.model_copy(update=sql)
        if entry.trainer is not None:
            trainer = entry.trainer.model_dump(exclude_unset=True)
            update["trainer"] = self.defaults.trainer.model_copy(update=trainer)
        if entry.retrain is not None:
            retrain = entry.retrain.model_dump(exclude_unset=True)
            update["retrain"] = self.defaults.retrain.model_copy(update=retrain)
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
    _check_retrain_bounds(path, limits)
    _check_catalog(path, limits)
    return limits


def _check_retrain_bounds(path: Path, limits: LimitsFile) -> None:
    """A tenant's `retrain` bounds, merged with the defaults, must leave a cooldown to set."""
    for name, entry in limits.tenants.items():
        if entry.retrain is None:
            continue
        problem = limits.for_tenant(name).retrain.disorder()
        if problem:
            raise PlatformConfigError(
                path, f"tenants.{name}.retrain", f"{problem} (with the defaults filled in)"
            )


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
    gpu = min(requested.gpu, caps.gpu) if limits.gpu_allowed else 0
    amounts = {
        "cpu": min(requested.cpu, caps.cpu),
        "memory_gib": min(requested.memory_gib, caps.memory_gib),
        "gpu": gpu,
    }
    if isinstance(requested, StepResources):
        # GPUs only of a class the tenant may use; a pool only if the tenant may use it.
        accelerator = (
            requested.accelerator if requested.accelerator in limits.allowed_accelerators else None
        )
        granted: ComputeResources = StepResources(
            **{**amounts, "gpu": gpu if accelerator else 0},
            accelerator=accelerator if gpu else None,
            node_pool=requested.node_pool
            if requested.node_pool in limits.allowed_node_pools
            else None,
        )
    else:
        granted = ComputeResources(**amounts)
    return requested if granted == requested else granted


def grant(tenant: str, requested: ComputeResources) -> tuple[ComputeResources, str | None]:
    """What the platform grants a request, and what it cut from it in words (asset metadata,
    step log, `validate`), or None when it granted all of it. The step's pod
    (k8s/steps.py) and its bill (cost/metering.py) both take what this returns."""
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
    elif requested.gpu and not effective.gpu:
        notes.append(
            f"gpu {requested.gpu} refused (tenant {tenant!r} may not use accelerator "
            f"{getattr(requested, 'accelerator', None)!r})"
        )
    elif effective.gpu < requested.gpu:
        notes.append(f"gpu {requested.gpu} capped to {effective.gpu}")
    pool = getattr(requested, "node_pool", None)
    if pool is not None and getattr(effective, "node_pool", None) is None:
        notes.append(f"node_pool {pool!r} refused (tenant {tenant!r} may not use it)")
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


def trainer_limits(tenant: str) -> TrainerLimits:
    """limits.yaml's `trainer` for `tenant`; its CPU and memory are its step's `grant`."""
    return limits_for(tenant).trainer


def retrain_limits(tenant: str) -> RetrainLimits:
    """limits.yaml's `retrain` for `tenant`: the bounds of its models' retrain cooldowns."""
    return limits_for(tenant).retrain


def check_retrain_cooldown(tenant: str, model: ModelSpec, path: Path) -> None:
    """Refuse a model whose retrain cooldown is outside the platform's bounds for its tenant,
    naming the model's file and field and the bound."""
    bounds = retrain_limits(tenant)
    hours = model.monitoring.retrain_cooldown_hours
    given = "" if "retrain_cooldown_hours" in model.monitoring.model_fields_set else " (default)"
    if hours < bounds.min_cooldown_hours:
        side, bound, name = "below", bounds.min_cooldown_hours, "min_cooldown_hours"
    elif hours > bounds.max_cooldown_hours:
        side, bound, name = "above", bounds.max_cooldown_hours, "max_cooldown_hours"
    else:
        return
    raise PlatformConfigError(
        path,
        "attributes.monitoring.retrain_cooldown_hours",
        f"{hours:g} h{given} is {side} the platform's bound of {bound:g} h for tenant "
        f"{tenant!r} ({LIMITS_FILE}: retrain.{name})",
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


def _check_catalog(path: Path, limits: LimitsFile) -> None:
    """Every accelerator class and node pool a tenant is allowed is in the catalog."""
    entries = [("defaults", limits.defaults)] + [
        (f"tenants.{name}", entry) for name, entry in limits.tenants.items()
    ]
    for where, entry in entries:
        for field, known in (
            ("allowed_accelerators", limits.catalog.accelerators),
            ("allowed_node_pools", limits.catalog.node_pools),
        ):
            for name in getattr(entry, field) or []:
                if name not in known:
                    raise PlatformConfigError(
                        path,
                        f"{where}.{field}",
                        f"{name!r} is not in catalog.{field.removeprefix('allowed_')} "
                        f"(known: {', '.join(sorted(known)) or 'none'})",
                    )


def catalog() -> Catalog:
    """The platform's accelerator classes and node pools."""
    return read_limits(limits_path()).catalog


def placement(granted: ComputeResources) -> tuple[Accelerator | None, NodePool | None]:
    """The catalog entries a granted request (`grant`) places its step with."""
    entries = catalog()
    accelerator = getattr(granted, "accelerator", None)
    pool = getattr(granted, "node_pool", None)
    return (
        entries.accelerators[accelerator] if accelerator else None,
        entries.node_pools[pool] if pool else None,
    )


def allowed_placements(tenant: str) -> tuple[list[Accelerator], list[NodePool]]:
    """The catalog entries `tenant` may be placed with (the pod policies' allow-list)."""
    limits, entries = limits_for(tenant), catalog()
    return (
        [entries.accelerators[a] for a in limits.allowed_accelerators],
        [entries.node_pools[p] for p in limits.allowed_node_pools],
    )
