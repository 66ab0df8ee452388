"""`mlplat`: the platform's command line."""

from __future__ import annotations

import typer

from platform_assets.cost import cli as cost_cli
from platform_assets.governance import cli as governance_cli
from platform_assets.k8s import cli as k8s_cli

app = typer.Typer(
    help=(
        "mlplat: every tenant's features, training sets, models and evaluation reports as "
        "Dagster assets.\n\nStart with `mlplat demo`, then `make ui` to watch it in Dagster."
    ),
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _defaults() -> None:
    """Commands run against the repository's embedded instance unless DAGSTER_HOME says else."""
    import os

    from platform_assets.execution.env import dagster_home

    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))


@app.command()
def demo() -> None:
    """Run every tenant's pipeline on the embedded instance, promote, and print a summary."""
    from platform_assets.demo import main

    main()


@app.command()
def tenants() -> None:
    """List tenants with their owners, budget, namespace and models (from the team YAML)."""
    from rich.console import Console
    from rich.table import Table

    from platform_assets.tenancy.catalog import load_all

    table = Table(title="tenants")
    for col in ("tenant", "owners", "budget USD/month", "namespace", "features", "models"):
        table.add_column(col)
    for name, cat in load_all().items():
        t = cat.tenant
        table.add_row(
            name,
            ", ".join(t.owners),
            f"{t.budget.monthly_usd:g}",
            t.namespace,
            ", ".join(cat.feature_sets),
            ", ".join(cat.models),
        )
    Console().print(table)


@app.command()
def validate() -> None:
    """Load every tenant's YAML, cross-check references and run the team-spec policies
    (policies/specs/); exit 1 naming the bad file (and the policy)."""
    from platform_assets.tenancy.catalog import (
        PlatformConfigError,
        check_model_refs,
        check_source_refs,
        load_all,
    )

    try:
        catalogs = load_all()
        for cat in catalogs.values():
            for fs in cat.feature_sets.values():
                check_source_refs(cat, fs)
            for model in cat.models.values():
                check_model_refs(cat, model)
    except PlatformConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    from platform_assets.k8s.team_policy import check_team_specs

    violations = check_team_specs(catalogs)
    for violation in violations:
        typer.echo(f"error: {violation}", err=True)
    if violations:
        raise typer.Exit(1)
    typer.echo(f"ok: {len(catalogs)} tenants valid")


app.command("costs")(cost_cli.costs)
app.add_typer(cost_cli.quotas_app, name="quotas")
app.add_typer(governance_cli.app)  # approve, reject, promote, rollback, pending, audit
app.add_typer(k8s_cli.k8s_app, name="k8s")
app.add_typer(k8s_cli.policy_app, name="policy")

if __name__ == "__main__":
    app()
