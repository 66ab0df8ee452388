"""What observability adds platform-wide: the SLO report and its hourly schedule."""

import dagster as dg

from platform_assets.observability.slo import (
    TenantAssets,
    slo_report_asset,
    slo_report_job,
    slo_report_schedule,
)


def platform_definitions(tenants: list[str], tenant_assets: TenantAssets) -> dg.Definitions:
    return dg.Definitions(
        assets=[slo_report_asset(tenants, tenant_assets)],
        jobs=[slo_report_job],
        schedules=[slo_report_schedule],
    )
