"""What features add to a tenant's code location: one feature view asset per feature set."""

import dagster as dg

from platform_assets.features.component import feature_assets
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            a
            for spec in catalog.feature_sets.values()
            for a in feature_assets(catalog, spec, placement)
        ]
    )
