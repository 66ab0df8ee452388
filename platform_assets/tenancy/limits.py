"""Platform-owned limits per tenant: budget, run quota, resource caps, GPU permission, and the
catalog of accelerator classes and node pools a tenant's steps may ask for.

They live in `platform_assets/limits/limits.yaml`, which only the platform team may change
(.github/CODEOWNERS), never in a tenant's own YAML: a tenant can ask for resources, the platform
decides what it gets (`effective_resources`) and what it may spend.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import AfterValidator, Field, ValidationError

from platform_assets.tenancy.specs import (
    NAMESPACE_RE,
    Budget,
    ComputeResources,
    Name,
    Owner,
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


class _Overrides(dg.Model):
    """A listed tenant's entry; each field it leaves out comes from the defaults."""

    budget: Budget | None = None
    max_concurrent_runs: StrictInt | None = Field(default=None, ge=1, le=10000)
    caps: ComputeResources | None = None
    gpu_allowed: StrictBool | None = None
    allowed_accelerators: list[Name] | None = None
    allowed_node_pools: list[Name] | None = None
    namespace: Annotated[str, AfterValidator(check_namespace)] | None = Field(
        default=None, description=f"Its Kubernetes namespace, when not `{NAMESPACE_PREFIX}<name>`"
    )


class PlatformTeam(dg.Model):
    owners: list[Owner] = Field(min_length=1)
    github_org: Name = Field(description="`team:<x>` owners are `@<github_org>/<x>` on GitHub")


class LimitsFile(dg.Model):
    platform: PlatformTeam
    defaults: TenantLimits
    tenants: dict[Name, _Overrides] = Field(default_factory=dict)
    catalog: Catalog = Field(default_factory=Catalog)

    def for_tenant(self, tenant: str) -> TenantLimits:
        entry = self.tenants.get(tenant)
        if entry is None:
            return self.defaults
        update = {k: getattr(entry, k) for k in entry.model_fields_set}
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
    _check_catalog(path, limits)
    return limits


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
