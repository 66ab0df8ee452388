"""`mlplat k8s values|render` and `mlplat policy check`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
import yaml

from platform_assets.composition.locations import k8s_pipeline_jobs
from platform_assets.k8s.gatekeeper import gatekeeper_manifests
from platform_assets.k8s.render import ToolMissing, render_all
from platform_assets.k8s.schemas import check_chart_values
from platform_assets.k8s.team_policy import check_team_specs
from platform_assets.k8s.values import chart_version, dagster_values, user_deployments_values
from platform_assets.tenancy.catalog import PlatformConfigError, load_all
from platform_assets.tenancy.locations import code_locations

k8s_app = typer.Typer(
    help="Kubernetes: Helm values, tenant resources and the Jobs Dagster submits."
)
policy_app = typer.Typer(help="Policy as code (policies/): team specs and Kubernetes workloads.")

OUT = typer.Option(..., "--out", help="Folder to write into (replaced whole).")


def _refuse_bad_specs() -> dict:
    try:
        catalogs = load_all()
    except PlatformConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    violations = check_team_specs(catalogs)
    for violation in violations:
        typer.echo(f"error: {violation}", err=True)
    if violations:
        raise typer.Exit(1)
    return catalogs


@k8s_app.command("values")
def values(out: Path = OUT) -> None:
    """Helm values for the official Dagster chart (and one user-deployments release per code
    location), checked against the chart's schemas."""
    catalogs = _refuse_bad_specs()
    tenants = {name: c.tenant for name, c in catalogs.items()}
    locations = code_locations()
    documents = {out / "dagster.values.yaml": ("dagster", dagster_values(tenants, locations))}
    for loc in locations:
        documents[out / "user-deployments" / f"{loc.name}.yaml"] = (
            "dagster-user-deployments",
            user_deployments_values(loc, tenants),
        )
    problems = []
    for path, (chart, document) in documents.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        problems += check_chart_values(document, chart, str(path))
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(
        f"ok: values for chart dagster {chart_version()} and {len(locations)} locations in {out}"
    )


def _report(rendered) -> None:
    for problem in rendered.problems:
        typer.echo(f"error: {problem}", err=True)
    for violation in rendered.violations:
        typer.echo(f"error: {violation}", err=True)
    if not rendered.ok:
        raise typer.Exit(1)


@k8s_app.command("render")
def render(out: Path = OUT) -> None:
    """Tenant resources (our chart through helm), the Dagster chart's values and every Job
    Dagster would submit, all checked against the schemas and the pod policies."""
    catalogs = _refuse_bad_specs()
    try:
        rendered = render_all(out, catalogs, k8s_pipeline_jobs(catalogs))
    except ToolMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _report(rendered)
    typer.echo(f"ok: {len(rendered.files)} files in {out}, every one checked")


@policy_app.command("check")
def check() -> None:
    """Run every policy: the team-spec policies on every tenant's YAML, the pod policies on
    every rendered workload; names each violation with its file or manifest."""
    catalogs = _refuse_bad_specs()
    with tempfile.TemporaryDirectory() as tmp:
        _report(render_all(Path(tmp) / "rendered", catalogs, k8s_pipeline_jobs(catalogs)))
    typer.echo(f"ok: {len(catalogs)} tenants and their workloads pass every policy")


@policy_app.command("gatekeeper")
def gatekeeper(out: Path = OUT) -> None:
    """The pod policies as Gatekeeper ConstraintTemplates and Constraints (the same Rego)."""
    catalogs = _refuse_bad_specs()
    manifests = gatekeeper_manifests({name: c.tenant for name, c in catalogs.items()})
    out.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        name = f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        (out / name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    typer.echo(f"ok: {len(manifests)} Gatekeeper manifests in {out} (apply templates first)")
