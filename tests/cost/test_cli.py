"""`mlplat costs` and `mlplat quotas` as the main CLI mounts them."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from platform_assets.cli import cost as cost_cli
from tests.cost.conftest import record_step

app = typer.Typer()
app.command("costs")(cost_cli.costs)
app.add_typer(cost_cli.quotas_app, name="quotas")


def test_costs_prints_each_tenants_total(instance, now):
    for tenant, usd in [("payments", 1.5), ("payments", 0.25), ("growth", 0.125)]:
        record_step(instance, tenant, usd)
    result = CliRunner().invoke(
        app, ["costs", "--month", now.strftime("%Y-%m")], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.count("│") > 3}
    assert "1.750000" in lines["payments"] and "0.125000" in lines["growth"]
    assert "3 recorded steps" in result.output


def test_costs_refuses_a_bad_month(instance):
    result = CliRunner().invoke(app, ["costs", "--month", "11-2026"])
    assert result.exit_code == 2
    assert "must look like YYYY-MM" in result.output


def test_quotas_write(tmp_path):
    path = tmp_path / "dagster.yaml"
    result = CliRunner().invoke(app, ["quotas", "write", "--path", str(path)])
    assert result.exit_code == 0, result.output
    assert "# BEGIN mlplat quotas" in path.read_text()


def test_costs_from_the_ledger_equal_the_event_log(instance, platform_home, tenants, now):
    import dagster as dg

    from platform_assets.cost.assets import tenant_cost_asset
    from platform_assets.resources.lake import LakeResource
    from platform_assets.resources.pricing import PricingResource

    for usd in (0.5, 0.25):
        record_step(instance, "payments", usd)
    lake = LakeResource(root=str(platform_home / "data" / "lake"))  # local deployment's lake
    assert dg.materialize(
        [tenant_cost_asset(tenants["payments"])],
        instance=instance,
        resources={"pricing": PricingResource(), "lake": lake},
        partition_key=now.strftime("%Y-%m-%d"),
    ).success
    month = now.strftime("%Y-%m")
    outputs = [
        CliRunner().invoke(app, ["costs", "--month", month, *flag], env={"COLUMNS": "160"})
        for flag in ([], ["--ledger"])
    ]
    assert [o.exit_code for o in outputs] == [0, 0], [o.output for o in outputs]
    assert "ledgers and the event log" in outputs[0].output
    assert "from the ledger files" in outputs[1].output
    for output in outputs:
        [row] = [line for line in output.output.splitlines() if "payments" in line]
        assert "0.750000" in row
