"""`mlplat`: the platform's command line."""

from __future__ import annotations

import typer

from platform_assets.cli import cost as cost_cli
from platform_assets.cli import governance as governance_cli
from platform_assets.cli import k8s as k8s_cli
from platform_assets.cli import models as models_cli
from platform_assets.cli import observability as observability_cli
from platform_assets.cli import services as services_cli
from platform_assets.cli import serving as serving_cli
from platform_assets.demo import main
from platform_assets.env import dagster_home
from platform_assets.features.component import dry_run
from platform_assets.governance.codeowners import repo_codeowners
from platform_assets.k8s.defs_configmaps import folder_configmap
from platform_assets.k8s.team_policy import check_team_specs
from platform_assets.tenancy.catalog import PlatformConfigError, check_model_refs, load_all
from platform_assets.tenancy.limits import capped, limits_for, load_limits
from platform_assets.tenancy.locations import WORKSPACE_FILE, render_workspace

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

    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))


@app.command()
def demo() -> None:
    """Run every tenant's pipeline on the embedded instance, promote, and print a summary."""
    main()


@app.command()
def tenants() -> None:
    """List tenants with their owners, budget (limits.yaml), namespace and models."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tenants")
    for col in ("tenant", "owners", "budget USD/month", "namespace", "features", "models"):
        table.add_column(col)
    for name, cat in load_all().items():
        t = cat.tenant
        table.add_row(
            name,
            ", ".join(t.owners),
            f"{limits_for(name).budget.monthly_usd:g}",
            t.namespace,
            ", ".join(cat.feature_sets),
            ", ".join(cat.models),
        )
    Console().print(table)


@app.command()
def validate() -> None:
    """Load every tenant's YAML, cross-check references, dry-run each feature set's SQL in the
    sandbox and run the team-spec policies (policies/specs/); exit 1 naming the bad file (and
    the policy). Requests the platform caps are warnings."""
    try:
        catalogs = load_all()
        for cat in catalogs.values():
            folder_configmap(cat.folder)  # what `k8s render` ships it in must hold it
            for fs in cat.feature_sets.values():
                dry_run(cat, fs)
            for model in cat.models.values():
                check_model_refs(cat, model)
        listed = load_limits()
    except PlatformConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for name, cat in catalogs.items():
        requests = [("tenant", name, cat.tenant.resources)]
        requests += [("model", m.name, m.resources) for m in cat.models.values() if m.resources]
        for kind, obj, requested in requests:
            note = capped(name, requested)
            if note:
                typer.echo(f"warning: {cat.file_of(kind, obj)}: attributes.resources: {note}")
    for name in sorted(set(listed) - set(catalogs)):
        typer.echo(f"warning: limits.yaml lists tenant {name!r}, which has no folder")
    violations = check_team_specs(catalogs)
    for violation in violations:
        typer.echo(f"error: {violation}", err=True)
    if violations:
        raise typer.Exit(1)
    typer.echo(f"ok: {len(catalogs)} tenants valid")


codeowners_app = typer.Typer(
    help="The generated .github/CODEOWNERS (tenant folders and platform limits).",
    no_args_is_help=True,
)


@codeowners_app.command("write")
def codeowners_write() -> None:
    """Rewrite .github/CODEOWNERS from the tenant folders' owners and limits.yaml."""
    path, text = repo_codeowners()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    typer.echo(f"wrote {path}")


@codeowners_app.command("show")
def codeowners_show() -> None:
    """Print what `write` would write."""
    typer.echo(repo_codeowners()[1], nl=False)


app.add_typer(codeowners_app, name="codeowners")


workspace_app = typer.Typer(help="The workspace's code locations (workspace.yaml).")


@workspace_app.command("write")
def workspace_write(
    check: bool = typer.Option(False, "--check", help="Exit 1 if the file is out of date."),
) -> None:
    """Render workspace.yaml from the tenant folders: `platform` and one location per tenant."""
    text = render_workspace()
    current = WORKSPACE_FILE.read_text() if WORKSPACE_FILE.exists() else ""
    if check:
        if current != text:
            typer.echo(f"{WORKSPACE_FILE} is out of date: run `mlplat workspace write`", err=True)
            raise typer.Exit(1)
        typer.echo(f"ok: {WORKSPACE_FILE} lists every code location")
        return
    WORKSPACE_FILE.write_text(text)
    typer.echo(f"wrote {WORKSPACE_FILE}")


app.add_typer(workspace_app, name="workspace")
app.command("costs")(cost_cli.costs)
app.add_typer(cost_cli.quotas_app, name="quotas")
app.add_typer(services_cli.app, name="services")
app.add_typer(governance_cli.app)  # approve, reject, promote, rollback, pending, audit
app.add_typer(models_cli.app, name="training-set")
app.add_typer(k8s_cli.k8s_app, name="k8s")
app.add_typer(k8s_cli.policy_app, name="policy")
app.command("serve")(serving_cli.serve)
app.add_typer(observability_cli.app, name="metrics")

if __name__ == "__main__":
    app()
