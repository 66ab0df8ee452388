"""The Definitions of one code location: a tenant's (or a platform group's) or the platform's.

A tenant location is built from its own folders only; the shared feature views of other tenants
it reads appear as external `AssetSpec`s, so lineage crosses locations in the UI while only the
owner's location materializes them. The platform location parses no tenant's YAML: it names
tenants by folder and their assets by key, so it loads whatever a tenant folder holds; its
sensors and the showback report a tenant whose folder does not load, and carry on.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import dagster as dg

from platform_assets.env import Deployment
from platform_assets.tenancy.catalog import (
    TenantCatalog,
    check_model_refs,
    defs_root,
    load_all,
    load_tenant,
    shared_tenant,
)
from platform_assets.tenancy.isolation import PLATFORM, check_isolation
from platform_assets.tenancy.locations import CodeLocation, location_named, tenant_folders


def pipeline_job_name(tenant: str) -> str:
    return f"{tenant}_pipeline"


def pipeline_selection(tenant: str) -> dg.AssetSelection:
    return dg.AssetSelection.groups(tenant) - dg.AssetSelection.tag("asset_type", "cost")


def automation_sensor_name(tenant: str) -> str:
    return f"{tenant}_automation"


def automation_sensor(tenant: str) -> dg.AutomationConditionSensorDefinition:
    """Runs the tenant's automation conditions (Dagster's default sensor is STOPPED), so
    `all_deps_blocking_checks_passed` gates every location under the daemon, in runs tagged
    with the tenant."""
    return dg.AutomationConditionSensorDefinition(
        automation_sensor_name(tenant),
        target=dg.AssetSelection.groups(tenant),
        run_tags={"tenant": tenant},
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Materializes {tenant}'s assets when their automation conditions say so.",
    )


def shared_view_specs(catalogs: dict[str, TenantCatalog]) -> list[dg.AssetSpec]:
    """External specs for the other tenants' feature views these tenants' models read."""
    specs = {}
    for catalog in catalogs.values():
        for model in catalog.models.values():
            for owner, fs in check_model_refs(catalog, model).values():
                if owner in catalogs:
                    continue
                key = dg.AssetKey([owner, "features", fs.name])
                specs[key] = dg.AssetSpec(
                    key,
                    group_name=owner,
                    tags={"tenant": owner, "asset_type": "feature_view"},
                    kinds={"feast"},
                    description=f"{fs.description} (shared by {owner}, materialized in its "
                    "code location)",
                )
    return list(specs.values())


def tenant_parts(catalogs: dict[str, TenantCatalog]) -> dg.Definitions:
    """Assets, jobs, schedules and automation of these tenants, without resources."""
    from platform_assets.tenancy.loader import tenant_assets

    assets = dg.Definitions(assets=[a for c in catalogs.values() for a in tenant_assets(c)])
    return dg.Definitions.merge(assets, tenant_runs(catalogs))


def tenant_runs(
    catalogs: dict[str, TenantCatalog], env: Deployment | None = None
) -> dg.Definitions:
    """What launches these tenants' runs: pipeline jobs, nightly schedules, automation and
    retraining on drift; `env` defaults to MLPLAT_ENV's (`mlplat k8s render` asks for the `k8s`
    jobs)."""
    from platform_assets.env import deployment
    from platform_assets.composition.executors import executor_for
    from platform_assets.monitoring.sensors import tenant_retrain_sensors
    from platform_assets.sensors.budget import tenant_schedule

    env = env or deployment()
    return dg.Definitions(
        jobs=[
            dg.define_asset_job(
                pipeline_job_name(name),
                selection=pipeline_selection(name),
                executor_def=executor_for(env, catalog.tenant, preload=True),
                tags={"tenant": name},
                description=f"Tenant {name}'s pipeline, in its own namespace on Kubernetes.",
            )
            for name, catalog in catalogs.items()
        ],
        schedules=[tenant_schedule(c.tenant) for c in catalogs.values()],
        sensors=[
            *(automation_sensor(name) for name in catalogs),
            *(s for c in catalogs.values() for s in tenant_retrain_sensors(c)),
        ],
    )


def platform_parts(tenants: list[str]) -> dg.Definitions:
    """What spans tenants: showback, the SLO report, budget, promotion and champion-alias
    sensors, governance jobs, and the lake's snapshot retention."""
    from platform_assets.cost.assets import showback_asset
    from platform_assets.governance.promotion import promote_model, rollback_model
    from platform_assets.governance.reconcile import champion_alias_reconciliation
    from platform_assets.observability.slo import (
        slo_report_asset,
        slo_report_job,
        slo_report_schedule,
    )
    from platform_assets.sensors.budget import budget_sensor
    from platform_assets.sensors.promotion import promotion_sensor
    from platform_assets.storage.retention import lake_retention, lake_retention_schedule

    return dg.Definitions(
        assets=[showback_asset(tenants), slo_report_asset(tenants)],
        jobs=[promote_model, rollback_model, lake_retention, slo_report_job],
        schedules=[lake_retention_schedule, slo_report_schedule],
        sensors=[promotion_sensor, budget_sensor, champion_alias_reconciliation],
    )


def platform_wide(parts: dg.Definitions) -> dg.Definitions:
    """Add the deployment's resources and default executor."""
    from platform_assets.env import deployment
    from platform_assets.composition.executors import executor_for
    from platform_assets.resources.deployment import resources_for

    env = deployment()
    return dg.Definitions.merge(
        parts, dg.Definitions(resources=resources_for(env), executor=executor_for(env))
    )


def tenant_location(location: CodeLocation, root: Path | None = None) -> dg.Definitions:
    root = (root or defs_root()).resolve()
    catalogs = {t: load_tenant(root / t) for t in location.tenants}
    shared = shared_view_specs(catalogs)
    defs = dg.Definitions.merge(tenant_parts(catalogs), dg.Definitions(assets=shared))
    tenants = {name: catalog.tenant for name, catalog in catalogs.items()}
    for owner in {s.key.path[0] for s in shared} - set(catalogs):
        tenants[owner] = shared_tenant(root / owner)  # what it shares, not its whole folder
    defs = platform_wide(defs)
    check_isolation(defs, tenants)
    return defs


def platform_location(root: Path | None = None) -> dg.Definitions:
    """Names tenants by their folders and their assets by key, parsing no tenant's YAML: it
    loads whatever a tenant folder holds, and as fast as a plain `Definitions` of its assets."""
    return platform_wide(platform_parts(tenant_folders(root)))


@cache
def location_definitions(name: str) -> dg.Definitions:
    """The Definitions of location `name`, built once per process."""
    if name == PLATFORM:
        return platform_location()
    return tenant_location(location_named(name))


def all_locations(root: Path | None = None) -> dg.Definitions:
    """Every location's definitions in one, without the external specs that only stand for
    another location's assets: what `dg check defs` and the graph snapshot see."""
    # load_all also checks what spans folders: the defs root holds only tenant folders.
    catalogs = load_all((root or defs_root()).resolve())
    names = sorted(catalogs)
    defs = platform_wide(dg.Definitions.merge(tenant_parts(catalogs), platform_parts(names)))
    check_isolation(defs, {n: c.tenant for n, c in catalogs.items()})
    return defs
