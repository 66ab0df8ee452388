"""What models add to a tenant's code location: training set, model and evaluation report of
each model."""

import dagster as dg

from platform_assets.models.component import model_assets
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            a for spec in catalog.models.values() for a in model_assets(catalog, spec, placement)
        ]
    )
