"""The per-tenant daily cost asset: what the tenant's steps spent that day."""

from collections import defaultdict

import dagster as dg

from platform_assets.cost.metering import PricingResource
from platform_assets.cost.rollup import step_costs
from platform_assets.tenancy.assets import asset_kwargs
from platform_assets.tenancy.specs import TenantSpec

DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_offset=1)


def tenant_cost_asset(tenant: TenantSpec) -> dg.AssetsDefinition:
    kwargs = asset_kwargs(
        tenant,
        "cost",
        ["cost"],
        f"Compute cost of tenant {tenant.name} per day, summed from the cost metadata of every "
        "materialization of its assets (billing on max(requested, used)).",
        {"python"},
    )

    @dg.asset(**kwargs, partitions_def=DAILY)
    def tenant_cost(context: dg.AssetExecutionContext, pricing: PricingResource):
        window = context.partition_time_window
        keys = [
            k
            for k in context.repository_def.asset_graph.get_all_asset_keys()
            if k.path[0] == tenant.name and k.path[1:] != ["cost"]
        ]
        steps = step_costs(context.instance, keys, window.start, window.end)
        by_asset: dict[str, float] = defaultdict(float)
        for s in steps:
            by_asset[s.asset_key] += s.usd
        total = sum(by_asset.values())
        table = "\n".join(
            ["| asset | USD |", "|---|---:|"]
            + [f"| {k} | {v:.6f} |" for k, v in sorted(by_asset.items(), key=lambda kv: -kv[1])]
        )
        return dg.MaterializeResult(
            metadata={
                "tenant": tenant.name,
                "total_usd": round(total, 8),
                "steps": len(steps),
                "cpu_seconds": round(sum(s.cpu_seconds for s in steps), 3),
                "currency": pricing.catalog().currency,
                "by_asset": dg.MetadataValue.md(table),
                "budget_monthly_usd": tenant.budget.monthly_usd,
            }
        )

    return tenant_cost
