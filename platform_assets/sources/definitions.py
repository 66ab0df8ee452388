"""What sources add to a tenant's code location: one staged, checked asset per source, and the
sensor that runs the pipeline when a new file lands in the tenant's inbox."""

import dagster as dg

from platform_assets.sources.component import source_assets
from platform_assets.sources.sensors import tenant_inbox_sensors
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            a for spec in catalog.sources.values() for a in source_assets(catalog, spec, placement)
        ],
        sensors=tenant_inbox_sensors(catalog),
    )
