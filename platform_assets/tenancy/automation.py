"""What a feature set's or model's `schedule:` or `freshness:` makes Dagster do.

Only sources read outside data, so a trigger refreshes the sources of the asset's lineage inside
its tenant: `on_cron` at each tick of a schedule (in the tenant's time zone), or once when a
freshness target turns stale. Everything below them stays `GATED` (tenancy/assets.py): it
follows changed data only, so a refresh that reads the same content retrains nothing. The
scheduled asset itself (a feature view, a model's training set) is also held to its cron: rebuilt
at most once per tick, after its sources refreshed at that tick, so a model that is scheduled
weekly is not retrained nightly because a feature set it reads is refreshed nightly.
"""

from __future__ import annotations

import dagster as dg

from platform_assets.tenancy.assets import AC, GATED
from platform_assets.tenancy.catalog import TenantCatalog, check_model_refs
from platform_assets.tenancy.specs import FeatureSetSpec, FreshnessSlo, ModelSpec

# A freshness policy's state as the freshness daemon last recorded it.
STALE = (AC.freshness_warned() | AC.freshness_failed()).with_label("stale")


def any_of(conditions: list[dg.AutomationCondition]) -> dg.AutomationCondition:
    first, *rest = conditions
    for condition in rest:
        first = first | condition
    return first


def all_of(conditions: list[dg.AutomationCondition]) -> dg.AutomationCondition:
    first, *rest = conditions
    for condition in rest:
        first = first & condition
    return first


def source_key(tenant: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([tenant, "sources", name])


def target_key(tenant: str, spec: FeatureSetSpec | ModelSpec) -> dg.AssetKey:
    """The asset a `schedule` or `freshness` is about: the feature view, or the model."""
    kind = "features" if isinstance(spec, FeatureSetSpec) else "models"
    return dg.AssetKey([tenant, kind, spec.name])


def lineage_sources(catalog: TenantCatalog, spec: FeatureSetSpec | ModelSpec) -> list[str]:
    """The tenant's own sources that `spec`'s asset is built from. Another tenant's shared
    feature view refreshes on its owner's triggers, in its owner's code location."""
    if isinstance(spec, FeatureSetSpec):
        return list(spec.sources)
    tenant = catalog.tenant.name
    names = [
        source
        for owner, fs in check_model_refs(catalog, spec).values()
        if owner == tenant
        for source in fs.sources
    ]
    return list(dict.fromkeys([*names, spec.labels.source]))


def triggered(catalog: TenantCatalog) -> list[FeatureSetSpec | ModelSpec]:
    """The tenant's feature sets and models with a `schedule` or a `freshness` target."""
    specs = [*catalog.feature_sets.values(), *catalog.models.values()]
    return [s for s in specs if s.schedule is not None or s.freshness is not None]


def source_condition(catalog: TenantCatalog, source: str) -> dg.AutomationCondition | None:
    """When the source refreshes: at each tick of the schedules of what is built from it, and
    once when a freshness target of what is built from it turns stale; never while a run of it
    is in progress (Dagster's `on_cron` alone would start a second one when a refresh outlasts
    the cron's period; the run in progress serves a tick that falls during it). None: nothing
    built from it has a trigger, so only a pipeline run or a person refreshes it."""
    tenant = catalog.tenant
    readers = [s for s in triggered(catalog) if source in lineage_sources(catalog, s)]
    crons = dict.fromkeys(s.schedule for s in readers if s.schedule is not None)
    stale = [target_key(tenant.name, s) for s in readers if s.freshness is not None]
    parts = [AC.on_cron(cron, tenant.timezone) for cron in crons]
    if stale:
        turned = [
            AC.asset_matches(key, STALE).newly_true().with_label(f"{key.to_user_string()} stale")
            for key in stale
        ]
        parts.append(
            any_of(turned).since_last_handled().with_label("a freshness target turned stale")
        )
    if not parts:
        return None
    # Labelled with its triggers, as the UI's automation tab and the graph snapshot show it.
    label = " | ".join(str(p.get_label()) for p in parts)
    return (any_of(parts) & ~AC.in_progress()).with_label(label)


def scheduled_condition(
    catalog: TenantCatalog, spec: FeatureSetSpec | ModelSpec
) -> dg.AutomationCondition:
    """The condition of a feature view or a model's training set: `GATED`, and for a scheduled
    one also at most once per tick of its cron, once its sources have refreshed since that
    tick (or it would build on the previous data at the tick itself)."""
    if spec.schedule is None:
        return GATED
    tenant = catalog.tenant
    tick = AC.cron_tick_passed(spec.schedule, tenant.timezone)
    refreshed = [
        AC.asset_matches(source_key(tenant.name, name), AC.newly_updated().since(tick))
        for name in lineage_sources(catalog, spec)
    ]
    return (
        GATED & tick.since_last_handled() & all_of(refreshed).with_label("sources refreshed")
    ).with_label(f"eager_on_changed_data, once per tick of {spec.schedule} ({tenant.timezone})")


def own_freshness(catalog: TenantCatalog) -> dict[dg.AssetKey, FreshnessSlo]:
    """The assets whose own YAML sets a `freshness` target, with it (the SLO report and the
    exporter read it instead of the tenant's `slos.freshness` for the asset's type)."""
    return {
        target_key(catalog.tenant.name, s): s.freshness for s in triggered(catalog) if s.freshness
    }
