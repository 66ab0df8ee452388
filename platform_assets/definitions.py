"""The code location: every tenant's YAML components plus platform jobs, sensors and resources.

Kept thin on purpose; heavy libraries (feast, mlflow, great_expectations, sklearn) are imported
inside the steps that use them so this module loads fast.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import dagster as dg

from platform_assets.cost.definitions import cost_definitions
from platform_assets.execution.env import Deployment, deployment
from platform_assets.execution.executors import executor_for
from platform_assets.execution.resources import resources_for
from platform_assets.governance.promotion import promote_model, rollback_model
from platform_assets.sensors.promotion import promotion_sensor
from platform_assets.tenancy.catalog import defs_root, load_all
from platform_assets.tenancy.isolation import check_isolation
from platform_assets.tenancy.loader import catalog_definitions, dagster_only_files

PIPELINE = "ml_pipeline"


def pipeline_selection(tenant: str | None = None) -> dg.AssetSelection:
    scope = dg.AssetSelection.groups(tenant) if tenant else dg.AssetSelection.all()
    return scope - dg.AssetSelection.tag("asset_type", "cost")


def platform_definitions(
    tenant_defs: dg.Definitions,
    env: Deployment | None = None,
    resources: dict[str, object] | None = None,
) -> dg.Definitions:
    """Add the platform's jobs, sensors, resources and executor to the tenants' components.

    `env` and `resources` default to MLPLAT_ENV's; `mlplat k8s render` asks for the `k8s` jobs
    without the services' connection settings (resources do not shape the Kubernetes Jobs).
    """
    env = env or deployment()
    tenants = load_all()
    # One Kubernetes executor has one namespace, so on k8s every tenant's pipeline runs in its
    # own namespace and there is no all-tenants pipeline.
    everyone = dg.define_asset_job(
        PIPELINE,
        selection=pipeline_selection(),
        executor_def=executor_for(env, preload=True),
        description="Every tenant's sources, features, training sets, models and reports.",
    )
    jobs = [
        *([everyone] if env != "k8s" else []),
        *[
            dg.define_asset_job(
                f"{name}_pipeline",
                selection=pipeline_selection(name),
                executor_def=executor_for(env, catalog.tenant, preload=True),
                tags={"tenant": name},
                description=f"Tenant {name}'s pipeline, in its own namespace on Kubernetes.",
            )
            for name, catalog in tenants.items()
        ],
        promote_model,
        rollback_model,
    ]
    platform = dg.Definitions(
        jobs=jobs,
        sensors=[promotion_sensor],
        resources=resources if resources is not None else resources_for(env),
        executor=executor_for(env),
    )
    specs = {name: catalog.tenant for name, catalog in tenants.items()}
    merged = dg.Definitions.merge(tenant_defs, platform, cost_definitions(specs))
    check_isolation(merged, specs)
    return merged


def tenant_definitions() -> dg.Definitions:
    """The tenants' YAML components: this package's defs folder, or MLPLAT_DEFS_ROOT's.

    Built from the catalog in one pass (see tenancy/loader.py) unless a folder holds something
    only Dagster's component loader understands; then the whole tree loads through it.
    """
    root = defs_root().resolve()
    catalogs = load_all(root)
    if not dagster_only_files(root, catalogs):
        return catalog_definitions(catalogs)
    return component_tree_definitions(root)


def component_tree_definitions(root: Path) -> dg.Definitions:
    """The defs folder loaded file by file through Dagster's component tree, as `dg` does."""
    if root == (Path(__file__).parent / "defs").resolve():
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # A generated tree (previews, the scale bench) is imported as a package from its parent.
    if str(root.parent) not in sys.path:
        sys.path.insert(0, str(root.parent))
    module = importlib.import_module(root.name)
    return dg.ComponentTree.from_module(defs_module=module, project_root=root.parent).build_defs()


@dg.definitions
def defs() -> dg.Definitions:
    return platform_definitions(tenant_definitions())
