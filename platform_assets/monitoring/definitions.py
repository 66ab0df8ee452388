"""What monitoring adds to a tenant's code location: each model's batch scores by its champion
and their drift from the training set, and retraining on drift."""

import dagster as dg

from platform_assets.monitoring.assets import drift_asset
from platform_assets.monitoring.batch_scores import batch_scores_asset
from platform_assets.monitoring.sensors import tenant_retrain_sensors
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog, check_model_refs


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    tenant = catalog.tenant
    assets = []
    for spec in catalog.models.values():
        resolved = check_model_refs(catalog, spec)
        requested = spec.resources or tenant.resources
        source = catalog.file_of("model", spec.name)
        assets += [
            batch_scores_asset(tenant, spec, resolved, requested, source, placement),
            drift_asset(tenant, spec, resolved, requested, source, placement),
        ]
    return dg.Definitions(assets=assets, sensors=tenant_retrain_sensors(catalog))
