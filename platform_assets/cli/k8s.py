"""`mlplat k8s values|render` and `mlplat policy check`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
import yaml

from platform_assets.composition.locations import k8s_pipeline_jobs
from platform_assets.k8s.gatekeeper import gatekeeper_manifests
from platform_assets.k8s.helm import ToolMissing
from platform_assets.k8s.render import Rendered, render_all, write_values
from platform_assets.k8s.schemas import (
    CHART_ENV,
    ChartSchemas,
    ChartSchemasMissing,
    dagster_chart_schemas,
)
from platform_assets.k8s.team_policy import check_team_specs
from platform_assets.k8s.values import chart_version
from platform_assets.tenancy.catalog import PlatformConfigError, load_all
from platform_assets.tenancy.locations import code_locations

k8s_app = typer.Typer(
    help="Kubernetes: Helm values, tenant resources and the Jobs Dagster submits."
)
policy_app = typer.Typer(help="Policy as code (policies/): team specs and Kubernetes workloads.")

OUT = typer.Option(..., "--out", help="Folder to write into (replaced whole).")
CHART = typer.Option(
    None,
    "--dagster-chart",
    envvar=CHART_ENV,
    help="The official Dagster chart, for its values schemas: a folder, a packaged .tgz or a "
    "`repo/chart` helm pulls. Default: shared/dagster-helm beside the repository, else "
    "`dagster` at our Dagster version in a chart repository you added (`helm repo add`); "
    "without any, the values-schema check is skipped, saying so.",
)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def _refuse_bad_specs() -> dict:
    try:
        catalogs = load_all()
    except PlatformConfigError as exc:
        raise _fail(exc) from exc
    violations = check_team_specs(catalogs)
    for violation in violations:
        typer.echo(f"error: {violation}", err=True)
    if violations:
        raise typer.Exit(1)
    return catalogs


def _with_chart(chart: str | None, work):
    """`work(schemas)` with the Dagster chart's schemas from where the user has the chart; a
    chart named but not found, a missing tool or a tenant folder that cannot be rendered is
    an error naming it, never a traceback."""
    try:
        with dagster_chart_schemas(chart) as schemas:
            typer.echo(f"chart schemas: {schemas.source}" if schemas.found else schemas.skipped)
            return work(schemas)
    except (ChartSchemasMissing, ToolMissing, PlatformConfigError) as exc:
        raise _fail(exc) from exc


def _report(rendered: Rendered) -> None:
    for problem in rendered.problems:
        typer.echo(f"error: {problem}", err=True)
    for violation in rendered.violations:
        typer.echo(f"error: {violation}", err=True)
    if not rendered.ok:
        raise typer.Exit(1)


def _checked(rendered: Rendered) -> str:
    """What the closing `ok:` line may claim."""
    if rendered.skipped:
        return "checked except the skipped check above"
    return "every one checked"


@k8s_app.command("values")
def values(out: Path = OUT, chart: str | None = CHART) -> None:
    """Helm values for the official Dagster chart (and one user-deployments release per code
    location), checked against the chart's schemas."""
    catalogs = _refuse_bad_specs()
    tenants = {name: c.tenant for name, c in catalogs.items()}
    locations = code_locations()

    def work(schemas: ChartSchemas) -> Rendered:
        rendered = Rendered(out)
        write_values(rendered, tenants, locations, schemas)
        return rendered

    rendered = _with_chart(chart, work)
    _report(rendered)
    typer.echo(
        f"ok: values for chart dagster {chart_version()} and {len(locations)} locations in "
        f"{out}, {_checked(rendered)}"
    )


@k8s_app.command("render")
def render(out: Path = OUT, chart: str | None = CHART) -> None:
    """Tenant resources (our chart through helm, with the ConfigMaps of the tenant folders),
    the Dagster chart's values and every Job Dagster would submit, all checked against the
    schemas and the pod policies."""
    catalogs = _refuse_bad_specs()
    rendered = _with_chart(
        chart, lambda schemas: render_all(out, catalogs, k8s_pipeline_jobs(catalogs), schemas)
    )
    _report(rendered)
    typer.echo(f"ok: {len(rendered.files)} files in {out}, {_checked(rendered)}")


@policy_app.command("check")
def check(chart: str | None = CHART) -> None:
    """Run every policy: the team-spec policies on every tenant's YAML, the pod policies on
    every rendered workload; names each violation with its file or manifest."""
    catalogs = _refuse_bad_specs()
    with tempfile.TemporaryDirectory() as tmp:
        rendered = _with_chart(
            chart,
            lambda schemas: render_all(
                Path(tmp) / "rendered", catalogs, k8s_pipeline_jobs(catalogs), schemas
            ),
        )
    _report(rendered)
    skipped = " (the chart-schema check skipped: see above)" if rendered.skipped else ""
    typer.echo(f"ok: {len(catalogs)} tenants and their workloads pass every policy{skipped}")


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
