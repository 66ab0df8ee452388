"""The platform's cost definitions: showback report, budget sensor, budget-guarded schedules."""

import dagster as dg

from platform_assets.cost.assets import showback_asset
from platform_assets.sensors.budget import budget_sensor, tenant_schedule
from platform_assets.tenancy.specs import TenantSpec


def cost_definitions(tenants: dict[str, TenantSpec]) -> dg.Definitions:
    return dg.Definitions(
        assets=[showback_asset(tenants)],
        sensors=[budget_sensor],
        schedules=[tenant_schedule(spec) for spec in tenants.values()],
    )
