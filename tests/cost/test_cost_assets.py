"""The per-tenant ledger asset replaces its day on re-materialization; showback and chargeback."""

from __future__ import annotations

import base64

import dagster as dg
import pandas as pd
import pytest

from platform_assets.cost.assets import showback_asset, tenant_cost_asset
from platform_assets.cost.rollup import read_ledger
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.pricing import PricingResource
from tests.cost.conftest import record_step

pytestmark = pytest.mark.materialize


def _resources(platform_home):
    return {"pricing": PricingResource(), "lake": LakeResource(root=str(platform_home / "lake"))}


def test_ledger_day_is_replaced_not_appended(instance, platform_home, tenants, now):
    day = now.strftime("%Y-%m-%d")
    record_step(instance, "payments", 1.5)
    record_step(instance, "payments", 2.5, asset="other")
    record_step(instance, "growth", 9.0)
    asset = tenant_cost_asset(tenants["payments"])
    for _ in range(2):
        result = dg.materialize(
            [asset], instance=instance, resources=_resources(platform_home), partition_key=day
        )
        assert result.success
    lake = _resources(platform_home)["lake"]
    ledger = lake.read("payments", "cost_ledger", day).to_pandas()
    assert len(ledger) == 2
    assert ledger["usd"].sum() == pytest.approx(4.0)
    assert set(ledger["tenant"]) == {"payments"}
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["total_usd"].value == pytest.approx(4.0)
    month = read_ledger(lake, now.strftime("%Y-%m"))
    assert len(month) == 2 and set(month["day"]) == {day}
    assert month["usd"].sum() == pytest.approx(4.0)


def test_showback_plot_and_chargeback(instance, platform_home, tenants, now):
    for tenant, usd in [("payments", 1.0), ("payments", 2.0), ("growth", 0.5), ("ridehail", 4.0)]:
        record_step(instance, tenant, usd)
    result = dg.materialize(
        [showback_asset(tenants)],
        instance=instance,
        resources=_resources(platform_home),
        partition_key=now.strftime("%Y-%m-%d"),
    )
    assert result.success
    md = result.get_asset_materialization_events()[0].materialization.metadata
    plot = md["plot"].value
    assert plot.startswith("![showback](data:image/png;base64,")
    assert base64.b64decode(plot.split(",", 1)[1].rstrip(")"))[:4] == b"\x89PNG"
    assert md["total_usd"].value == pytest.approx(7.5)
    assert "payments" in md["month_to_date"].value
    csv = pd.read_csv(md["chargeback_csv"].value)
    parquet = pd.read_parquet(md["chargeback_parquet"].value)
    assert csv.groupby("tenant")["usd"].sum().to_dict() == pytest.approx(
        {"payments": 3.0, "growth": 0.5, "ridehail": 4.0}
    )
    assert len(parquet) == len(csv)
    assert md["chargeback_parquet"].value.startswith(str(platform_home / "lake" / "platform"))
