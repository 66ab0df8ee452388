"""What every platform asset carries: key under the tenant, group, owners, tags, kinds, the
resources its step is granted, its freshness policy, and whatever the deployment places on its
step (the `k8s` deployment: the step's pod, platform_assets/k8s/steps.py)."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.tenancy.limits import grant
from platform_assets.tenancy.runs import claim_run
from platform_assets.tenancy.specs import ASSET_TYPES, ComputeResources, FreshnessSlo, TenantSpec

# What a deployment adds to the op tags of one tenant step, from its tenant, its granted
# resources and its asset path: nothing locally; the step's pod on `k8s` (k8s/steps.py). The
# composition root picks it per deployment, so no other deployment builds pod JSON.
Placement = Callable[[TenantSpec, ComputeResources, list[str]], Mapping[str, str]]

AC = dg.AutomationCondition
# A dependency that was materialized since the last tick with a data version it did not have
# before. Every lake asset's data version is its snapshot's content hash, so re-reading sources
# that did not change requests nothing downstream. Not `will_be_requested` either (eager's
# `any_deps_updated` has it): a dependency about to run may well come back unchanged; its
# dependents run on the tick after it did, or in the same run when they are requested with it.
ANY_DEPS_CHANGED = AC.any_deps_match(
    (AC.newly_updated() & ~AC.executed_with_root_target() & AC.data_version_changed()).with_label(
        "newly_updated_with_new_data"
    )
).with_label("any_deps_changed")
# Built once: Dagster composes a condition tree per call. Eager on changed data only, and never
# past a dependency whose blocking checks failed.
GATED = (
    AC.eager().replace("any_deps_updated", ANY_DEPS_CHANGED) & AC.all_deps_blocking_checks_passed()
).with_label("eager_on_changed_data")


def team_asset(**kwargs: Any) -> Callable[[Callable], dg.AssetsDefinition]:
    """`dg.asset` for the assets built from team YAML.

    Dagster inspects an asset function's signature about 17 times while building its definition;
    setting it once (PEP 362's `__signature__`, which `inspect.signature` returns as is) saves
    ~0.25 ms per asset, a sixth of loading 100 tenants (docs/benchmarks.md, Scale).
    """

    tenant = kwargs["tags"]["tenant"]

    def decorate(fn: Callable) -> dg.AssetsDefinition:
        # Every step first claims its run for the tenant (tenancy/runs.py), however launched.
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def step(*args, **kw):
                claim_run(tenant)
                yield from fn(*args, **kw)
        else:

            @functools.wraps(fn)
            def step(*args, **kw):
                claim_run(tenant)
                return fn(*args, **kw)

        step.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        return _decorator(dict(kwargs))(step)

    return decorate


SPEC_FIELDS = ("key", "group_name", "owners", "tags", "kinds", "description", "metadata", "deps")


def _decorator(kwargs: dict[str, Any]) -> Callable:
    """`dg.asset`, or with `optional_checks=True` a one-asset `dg.multi_asset` whose checks, like
    the asset itself, are optional outputs (only a subsettable multi-asset's are): a step that
    has nothing to judge (a drift asset before the model has a champion) then yields neither,
    rather than a check result that judged nothing."""
    if not kwargs.pop("optional_checks", False):
        return dg.asset(**kwargs)
    kwargs.pop("output_required", None)
    spec = dg.AssetSpec(
        **{k: kwargs.pop(k) for k in SPEC_FIELDS if k in kwargs},
        automation_condition=kwargs.pop("automation_condition", None),
    )
    return dg.multi_asset(name="__".join(spec.key.path), specs=[spec], can_subset=True, **kwargs)


def expectations_check(key: dg.AssetKey) -> dg.AssetCheckSpec:
    """The blocking check that runs the YAML's Great Expectations suite on an asset."""
    return dg.AssetCheckSpec(
        "expectations",
        asset=key,
        blocking=True,
        description="Great Expectations suite from the team YAML",
    )


def _dagster_owner(owner: str) -> bool:
    return owner.startswith("team:") or "@" in owner


# The Dagster pool GPU steps queue in (its slots: platform_assets.cost.quotas.POOLS).
GPU_POOL = "gpu"


def yaml_reference(source: Path) -> dict[str, Any]:
    """Metadata that links an asset to the team YAML it comes from (shown in the UI).

    Code references are Dagster's only link from an asset to its file and are still beta; the
    filter covers these two constructors, not the rest of the location's load.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        reference = dg.LocalFileCodeReference(file_path=str(source), line_number=1)
        return {
            "dagster/code_references": dg.CodeReferencesMetadataValue(code_references=[reference])
        }


class TeamComponent(dg.Component):
    """A platform component in a team's YAML: the vocabulary (`type:`, its schema in the editor
    and `dg list components`), never built file by file. The defs root's `Tenants` component
    builds every tenant folder from the catalog, as the code locations do; Dagster reaches a
    team file's own `build_defs` only when a tenant folder is loaded without that root."""

    @classmethod
    def get_code_references_for_yaml(cls, yaml_path, source_position, context) -> list:
        return []

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        raise dg.DagsterInvalidDefinitionError(
            f"{context.path / 'defs.yaml'}: team files are built by the defs root's `Tenants` "
            "component from the tenant catalog, not one by one: load the defs root, whose "
            "defs.yaml declares it"
        )


def freshness_policy(slo: FreshnessSlo) -> dg.FreshnessPolicy:
    """Dagster's own freshness policy for an asset under this SLO (the UI and the freshness
    daemon show PASS/WARN/FAIL from it; the exporter compares the lag with its windows)."""
    warn = timedelta(hours=slo.warn_after_hours) if slo.warn_after_hours is not None else None
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=slo.fail_after_hours), warn_window=warn
    )


def asset_kwargs(
    tenant: TenantSpec,
    asset_type: str,
    path: list[str],
    description: str,
    kinds: set[str],
    requested: ComputeResources | None = None,
    *,
    source: Path | None = None,
    metadata: dict[str, Any] | None = None,
    placement: Placement | None = None,
    freshness: FreshnessSlo | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `dg.asset`/`dg.AssetSpec` shared by all platform assets.

    `source` is the team YAML the asset comes from. The step requests what the platform grants
    (the request capped by limits.yaml, said in the asset's metadata); steps granted GPUs join
    the GPU pool. The asset gets Dagster's freshness policy from `freshness` (its own YAML's
    target), else from the tenant's `slos.freshness` for its type. `placement` adds the
    deployment's op tags to the step.
    """
    if asset_type not in ASSET_TYPES:
        raise ValueError(f"asset_type {asset_type!r} is not one of {ASSET_TYPES}")
    requested, note = grant(tenant.name, requested or tenant.resources)
    metadata = {**(metadata or {}), **({"resources/capped": note} if note else {})}
    extra: dict[str, Any] = {"pool": GPU_POOL} if requested.gpu else {}
    freshness = freshness or tenant.slos.freshness.get(asset_type)
    if freshness is not None:
        extra["freshness_policy"] = freshness_policy(freshness)
    return {
        **extra,
        "key": dg.AssetKey([tenant.name, *path]),
        "group_name": tenant.name,
        "owners": [o for o in tenant.owners if _dagster_owner(o)],
        "tags": {"tenant": tenant.name, "asset_type": asset_type},
        "kinds": kinds,
        "description": description,
        "op_tags": step_op_tags(tenant, requested, path, placement),
        "metadata": {**metadata, **(yaml_reference(source) if source else {})},
    }


def step_op_tags(
    tenant: TenantSpec,
    granted: ComputeResources,
    path: list[str],
    placement: Placement | None = None,
) -> dict[str, str]:
    """The op tags of a tenant's step (an asset's, or a check's that runs on its own): its
    tenant, and what the deployment places on it with the granted resources."""
    return {"tenant": tenant.name, **(placement(tenant, granted, path) if placement else {})}
