"""What serving adds to a tenant's code location: each feature view's online copy."""

import dagster as dg

from platform_assets.serving.online import online_assets
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            a
            for spec in catalog.feature_sets.values()
            for a in online_assets(catalog, spec, placement)
        ]
    )
