"""Cost assets: each tenant's daily ledger `<tenant>/cost` and the platform's showback report.

Both read the event log (see rollup.py), so re-materializing a partition recomputes it from the
same records and replaces its files rather than adding to them.
"""

import base64
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.cost.rollup import (
    LEDGER_COLUMNS,
    LEDGER_KIND,
    PLATFORM,
    ledger_between,
    ledger_frame,
    month_bounds,
    rollup_frame,
    tenant_steps,
)
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import Placement, asset_kwargs, team_asset
from platform_assets.tenancy.limits import limits_for
from platform_assets.tenancy.runs import claim_run
from platform_assets.tenancy.specs import TenantSpec

if TYPE_CHECKING:  # pandas and pyarrow load in the steps, not with the code location
    import pandas as pd

DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_offset=1)
SHOWBACK_KEY = dg.AssetKey([PLATFORM, "cost", "showback"])


def _window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def tenant_cost_asset(
    tenant: TenantSpec, source: Path | None = None, placement: Placement | None = None
) -> dg.AssetsDefinition:
    kwargs = asset_kwargs(
        tenant,
        "cost",
        ["cost"],
        f"Compute cost of tenant {tenant.name} per day: one ledger row per recorded step of its "
        "assets (billing on max(requested, used)), from the event log. Re-materializing a day "
        "rewrites that day's ledger snapshot.",
        {"python", "parquet"},
        source=source,
        placement=placement,
    )

    @team_asset(**kwargs, partitions_def=DAILY)
    def tenant_cost(
        context: dg.AssetExecutionContext, pricing: PricingResource, lake: LakeResource
    ):
        import pyarrow as pa

        start, end = _window(context)
        steps = tenant_steps(context.instance, start, end, tenant.name)
        ledger = ledger_frame(steps)
        snapshot = lake.write(
            tenant.name,
            LEDGER_KIND,
            start.strftime("%Y-%m-%d"),
            pa.Table.from_pandas(ledger[LEDGER_COLUMNS], preserve_index=False),
        )
        by_asset = ledger.groupby("asset_key")["usd"].sum().sort_values(ascending=False)
        table = "\n".join(
            ["| asset | USD |", "|---|---:|"] + [f"| {k} | {v:.6f} |" for k, v in by_asset.items()]
        )
        return dg.MaterializeResult(
            metadata={
                "tenant": tenant.name,
                "total_usd": round(float(ledger["usd"].sum()), 8),
                "steps": len(ledger),
                "cpu_seconds": round(float(ledger["cpu_seconds"].sum()), 3),
                "currency": pricing.catalog().currency,
                "ledger_uri": snapshot.uri,
                "by_asset": dg.MetadataValue.md(table),
                "budget_monthly_usd": limits_for(tenant.name).budget.monthly_usd,
            }
        )

    return tenant_cost


def _png_markdown(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f"![showback](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def showback_plot(daily: "pd.DataFrame", mtd: "pd.DataFrame") -> str:
    """Daily cost per tenant (stacked) and month-to-date against budget, as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    pivot = daily.pivot_table(index="day", columns="tenant", values="usd", aggfunc="sum").fillna(0)
    if not pivot.empty:
        pivot.plot.bar(stacked=True, ax=left)
    left.set_title("Daily cost per tenant (USD)")
    left.set_xlabel("")
    pct = (mtd["spent_usd"] / mtd["budget_usd"] * 100).tolist()
    right.barh(mtd["tenant"], pct, color=["tab:red" if p >= 100 else "tab:blue" for p in pct])
    right.axvline(80, color="orange", linestyle="--", label="warn (80%)")
    right.axvline(100, color="red", label="budget")
    right.set_title("Month to date, % of budget")
    right.legend(loc="lower right")
    md = _png_markdown(fig)
    plt.close(fig)
    return md


def showback_asset(tenants: list[str]) -> dg.AssetsDefinition:
    """Month-to-date showback up to the partition's day, and that month's chargeback export.

    It names tenants by key only: the platform location loads whatever a tenant folder holds."""

    @dg.asset(
        key=SHOWBACK_KEY,
        group_name=PLATFORM,
        owners=["team:platform"],
        tags={"asset_type": "cost", "tenant": PLATFORM},
        kinds={"python", "parquet", "csv"},
        partitions_def=DAILY,
        deps=[dg.AssetKey([t, "cost"]) for t in tenants],
        description=(
            "Showback: cost per tenant, asset and day for the month up to this partition's day, "
            "month-to-date against each tenant's budget, and the month's chargeback export "
            "(CSV and parquet under the platform's lake prefix). Closed days are read from the "
            "tenants' daily ledgers, the rest from the event log."
        ),
    )
    def showback(context: dg.AssetExecutionContext, lake: LakeResource):
        import pandas as pd
        import pyarrow as pa

        claim_run(PLATFORM)

        day_start, day_end = _window(context)
        month = day_start.strftime("%Y-%m")
        month_start, _ = month_bounds(month)
        ledger = ledger_between(context.instance, lake, sorted(tenants), month_start, day_end)
        daily = rollup_frame(ledger)
        spent = daily.groupby("tenant")["usd"].sum()
        mtd = pd.DataFrame(
            [
                {
                    "tenant": name,
                    "spent_usd": float(spent.get(name, 0.0)),
                    "budget_usd": limits_for(name).budget.monthly_usd,
                }
                for name in sorted(tenants)
            ]
        )
        mtd["pct_of_budget"] = (mtd["spent_usd"] / mtd["budget_usd"] * 100).round(2)
        chargeback = (
            daily.groupby(["tenant", "asset_key"], as_index=False)
            .agg(steps=("steps", "sum"), usd=("usd", "sum"), cpu_seconds=("cpu_seconds", "sum"))
            .assign(month=month, through=(day_end - timedelta(seconds=1)).strftime("%Y-%m-%d"))
        )
        snapshot = lake.write(
            PLATFORM, "chargeback", month, pa.Table.from_pandas(chargeback, preserve_index=False)
        )
        csv_uri = lake.attach(snapshot, "csv", chargeback.to_csv(index=False).encode())
        table = daily[["tenant", "asset_key", "day", "steps", "usd"]].copy()
        table["usd"] = table["usd"].round(6)
        return dg.MaterializeResult(
            metadata={
                "month": month,
                "total_usd": round(float(daily["usd"].sum()), 8),
                "steps": len(ledger),
                "month_to_date": dg.MetadataValue.md(mtd.to_markdown(index=False)),
                "plot": dg.MetadataValue.md(showback_plot(daily, mtd)),
                "cost_by_tenant_asset_day": dg.MetadataValue.md(table.to_markdown(index=False)),
                "chargeback_parquet": snapshot.uri,
                "chargeback_csv": csv_uri,
            }
        )

    return showback
