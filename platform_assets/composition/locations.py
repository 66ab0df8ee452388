"""The Definitions of one code location: a tenant's (or a platform group's) or the platform's.

Each capability says what it adds for one tenant's catalog (`tenant_definitions`) and, where it
has any, platform-wide (`platform_definitions`); this module only merges them, with the
deployment's resources, executors and step placement (the pod of each step on `k8s`).

A tenant location is built from its own folders only; the shared feature views of other tenants
it reads appear as external `AssetSpec`s, so lineage crosses locations in the UI while only the
owner's location materializes them. The platform location parses no tenant's YAML: it names
tenants by folder and their assets by key, so it loads whatever a tenant folder holds; its
sensors and the showback report a tenant whose folder does not load, and carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg

from platform_assets.composition.executors import executor_for
from platform_assets.cost import definitions as cost
from platform_assets.env import Deployment, deployment
from platform_assets.features import definitions as features
from platform_assets.governance import definitions as governance
from platform_assets.k8s.steps import k8s_placement
from platform_assets.models import definitions as models
from platform_assets.monitoring import definitions as monitoring
from platform_assets.observability import definitions as observability
from platform_assets.resources.deployment import resources_for
from platform_assets.serving import definitions as serving
from platform_assets.sources import definitions as sources
from platform_assets.storage import definitions as storage
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import (
    TenantCatalog,
    check_model_refs,
    defs_root,
    load_all,
    load_tenant,
    shared_tenant,
)
from platform_assets.tenancy.isolation import PLATFORM, check_isolation
from platform_assets.tenancy.locations import (
    CodeLocation,
    code_locations,
    location_named,
    skipped_folders,
    tenant_folders,
)
from platform_assets.tenancy.runs import (
    automation_sensor_name,
    pipeline_job_name,
    pipeline_selection,
)

log = logging.getLogger(__name__)

TenantDefinitions = Callable[[TenantCatalog, Placement | None], dg.Definitions]
# What each capability adds for one tenant, in lineage order.
TENANT_CAPABILITIES: tuple[TenantDefinitions, ...] = (
    cost.tenant_definitions,
    sources.tenant_definitions,
    features.tenant_definitions,
    serving.tenant_definitions,
    models.tenant_definitions,
    monitoring.tenant_definitions,
    governance.tenant_definitions,
)


def placement_for(env: Deployment) -> Placement | None:
    """What each tenant step carries for the deployment: its pod on `k8s`, nothing else."""
    return k8s_placement if env == "k8s" else None


def tenant_definitions(catalog: TenantCatalog, env: Deployment | None = None) -> dg.Definitions:
    """Everything the capabilities add for one tenant: assets, checks and their sensors."""
    placement = placement_for(env or deployment())
    return dg.Definitions.merge(*(add(catalog, placement) for add in TENANT_CAPABILITIES))


def tenant_assets(catalog: TenantCatalog) -> list[dg.AssetsDefinition]:
    """One tenant's assets as its code location builds them (the SLOs read their freshness)."""
    return [
        a for a in tenant_definitions(catalog).assets or [] if isinstance(a, dg.AssetsDefinition)
    ]


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


def tenant_parts(
    catalogs: dict[str, TenantCatalog], env: Deployment | None = None
) -> dg.Definitions:
    """Assets, jobs, schedules and sensors of these tenants, without resources; `env` defaults
    to MLPLAT_ENV's (`mlplat k8s render` asks for the `k8s` ones)."""
    env = env or deployment()
    return dg.Definitions.merge(
        *(tenant_definitions(c, env) for c in catalogs.values()), tenant_runs(catalogs, env)
    )


def tenant_runs(catalogs: dict[str, TenantCatalog], env: Deployment) -> dg.Definitions:
    """What launches these tenants' pipelines: a job each (a person's or a sensor's launch) and
    the automation sensor, which runs the conditions the YAML's schedules and freshness targets
    put on the assets (tenancy/automation.py)."""
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
        sensors=[automation_sensor(name) for name in catalogs],
    )


def platform_parts(tenants: list[str]) -> dg.Definitions:
    """What spans tenants: showback, the SLO report, budget, promotion and champion-alias
    sensors, governance jobs, and the lake's snapshot retention."""
    return dg.Definitions.merge(
        cost.platform_definitions(tenants),
        observability.platform_definitions(tenants, tenant_assets),
        governance.platform_definitions(),
        storage.platform_definitions(),
    )


def platform_wide(parts: dg.Definitions) -> dg.Definitions:
    """Add the deployment's resources and default executor."""
    env = deployment()
    return dg.Definitions.merge(
        parts, dg.Definitions(resources=resources_for(env), executor=executor_for(env))
    )


def k8s_pipeline_jobs(
    catalogs: dict[str, TenantCatalog],
) -> dict[str, tuple[dg.JobDefinition, CodeLocation]]:
    """Each tenant's pipeline as the `k8s` deployment defines it, with its code location (what
    `mlplat k8s render` captures the Jobs of)."""
    # Resources only satisfy the assets' requirements here; they shape no Job.
    defs = dg.Definitions.merge(
        tenant_parts(catalogs, env="k8s"), dg.Definitions(resources=resources_for("local"))
    )
    repo = defs.get_repository_def()
    location_of = {t: loc for loc in code_locations() for t in loc.tenants}
    return {
        pipeline_job_name(name): (repo.get_job(pipeline_job_name(name)), location_of[name])
        for name in catalogs
    }


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
    loads whatever a tenant folder holds, and as fast as a plain `Definitions` of its assets.

    A folder whose name is no tenant name is skipped, with a warning in the code server's log
    and in the location's metadata (`platform/skipped_folders`), so it cannot fail every
    tenant's sensors and reports; `mlplat validate` and `dg check defs` refuse it.
    """
    root = root or defs_root()
    defs = platform_wide(platform_parts(tenant_folders(root)))
    skipped = {str(root / name): reason for name, reason in skipped_folders(root).items()}
    if not skipped:
        return defs
    for folder, reason in skipped.items():
        log.warning("platform location: skipped %s, which names no tenant: %s", folder, reason)
    return dg.Definitions.merge(
        defs, dg.Definitions(metadata={"platform/skipped_folders": dg.MetadataValue.json(skipped)})
    )


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
