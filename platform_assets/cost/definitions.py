"""What cost adds: per tenant, its daily cost asset; platform-wide, the showback report and the
budget sensor. (Over budget, the run coordinator refuses a tenant's runs, whatever launched them:
`coordinator.py`.)"""

import dagster as dg

from platform_assets.cost.assets import showback_asset, tenant_cost_asset
from platform_assets.cost.sensors import budget_sensor
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    tenant = catalog.tenant
    source = catalog.file_of("tenant", tenant.name)
    return dg.Definitions(assets=[tenant_cost_asset(tenant, source, placement)])


def platform_definitions(tenants: list[str]) -> dg.Definitions:
    return dg.Definitions(assets=[showback_asset(tenants)], sensors=[budget_sensor])
