"""`mlplat costs` and `mlplat quotas`: showback in the terminal and quotas into dagster.yaml."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from platform_assets.cost.quotas import BEGIN, apply_pool_limits, render_block, write_quotas
from platform_assets.cost.rollup import ledger_between, month_bounds, read_ledger
from platform_assets.env import deployment, repo_root
from platform_assets.resources.deployment import resources_for
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.limits import limits_for

quotas_app = typer.Typer(help="Run quotas per tenant and shared pools.", no_args_is_help=True)


def costs(
    month: Annotated[
        str | None, typer.Option(help="YYYY-MM (UTC); defaults to the current month")
    ] = None,
    by_asset: Annotated[bool, typer.Option(help="One row per tenant and asset")] = False,
    ledger: Annotated[
        bool,
        typer.Option(
            help="Read only the daily ledger files the <tenant>/cost partitions wrote (only "
            "days whose cost partition was materialized)"
        ),
    ] = False,
) -> None:
    """Cost per tenant for a month: the recorded steps' cost metadata, read as the showback reads
    it (closed days from the tenants' ledger files, the other days from the event log)."""
    import dagster as dg
    from rich.console import Console
    from rich.table import Table

    month = month or datetime.now(UTC).strftime("%Y-%m")
    try:
        start, end = month_bounds(month)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--month") from exc
    budgets = {n: limits_for(n).budget.monthly_usd for n in load_all()}
    lake = resources_for(deployment())["lake"]
    if ledger:
        rows = read_ledger(lake, month)  # type: ignore[arg-type]
        source = "ledger files"
    else:
        with dg.DagsterInstance.get() as instance:
            rows = ledger_between(instance, lake, sorted(budgets), start, end)  # type: ignore[arg-type]
        source = "closed days' ledgers and the event log"
    keys = ["tenant", "asset_key"] if by_asset else ["tenant"]
    grouped = rows.groupby(keys, as_index=False).agg(
        steps=("usd", "size"), cpu_seconds=("cpu_seconds", "sum"), usd=("usd", "sum")
    )
    table = Table(title=f"mlplat costs {month} ({len(rows)} recorded steps, from the {source})")
    for col in [*keys, "steps", "CPU s", "USD", "budget USD", "% of budget"]:
        table.add_column(col, justify="left" if col in keys else "right")
    for row in grouped.itertuples(index=False):
        budget = budgets.get(row.tenant)
        pct = f"{row.usd / budget:.1%}" if budget and not by_asset else ""
        table.add_row(
            *[str(getattr(row, k)) for k in keys],
            str(row.steps),
            f"{row.cpu_seconds:,.1f}",
            f"{row.usd:,.6f}",
            f"{budget:,.0f}" if budget and not by_asset else "",
            pct,
        )
    table.add_section()
    table.add_row(
        "total",
        *[""] * (len(keys) - 1),
        str(len(rows)),
        f"{rows['cpu_seconds'].sum():,.1f}",
        f"{rows['usd'].sum():,.6f}",
        "",
        "",
    )
    Console().print(table)


@quotas_app.command("write")
def quotas_write(
    path: Annotated[
        Path | None, typer.Option(help="dagster.yaml to update; defaults to the repo's")
    ] = None,
) -> None:
    """Rewrite the `# BEGIN mlplat quotas` block of dagster.yaml from limits.yaml."""
    path = path or repo_root() / "dagster.yaml"
    try:
        write_quotas(path, load_all())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote the '{BEGIN}' block of {path}")


@quotas_app.command("show")
def quotas_show() -> None:
    """Print the quota block that `write` would write."""
    typer.echo(render_block(load_all()), nl=False)


@quotas_app.command("pools")
def quotas_pools() -> None:
    """Set the shared pools' slots (e.g. gpu) on the instance at DAGSTER_HOME."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for pool, slots in apply_pool_limits(instance).items():
            typer.echo(f"pool {pool}: {slots} slot(s)")
