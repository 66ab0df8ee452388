"""What governance adds: per tenant, each model's champion-alias check; platform-wide, the
promotion and alias-reconciliation sensors and the promote and rollback jobs."""

import dagster as dg

from platform_assets.governance.promotion import promote_model, rollback_model
from platform_assets.governance.reconcile import alias_check, champion_alias_reconciliation
from platform_assets.governance.sensors import promotion_sensor
from platform_assets.tenancy.assets import Placement
from platform_assets.tenancy.catalog import TenantCatalog


def tenant_definitions(catalog: TenantCatalog, placement: Placement | None) -> dg.Definitions:
    return dg.Definitions(
        asset_checks=[alias_check(catalog.tenant, name, placement) for name in catalog.models]
    )


def platform_definitions() -> dg.Definitions:
    return dg.Definitions(
        jobs=[promote_model, rollback_model],
        sensors=[promotion_sensor, champion_alias_reconciliation],
    )
