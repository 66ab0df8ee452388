"""`mlplat metrics`: serve the exporter; `mlplat metrics write`: its rules and dashboard."""

from __future__ import annotations

import typer

from platform_assets.composition.locations import platform_parts, tenant_assets
from platform_assets.env import deployment
from platform_assets.observability import dashboards
from platform_assets.observability.exporter import PlatformState, Tenants, serve
from platform_assets.resources.deployment import resources_for
from platform_assets.tenancy.locations import tenant_folders

app = typer.Typer(
    help="The platform's Prometheus exporter, and its generated alerting rules and dashboard.",
    invoke_without_command=True,
)


@app.callback()
def metrics(
    ctx: typer.Context,
    port: int = typer.Option(9464, "--port", help="Port of the /metrics endpoint."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    history_days: float = typer.Option(
        7.0, "--history-days", help="How far back counters start at the exporter's start."
    ),
) -> None:
    """Serve /metrics for Prometheus, read from the Dagster instance (DAGSTER_HOME), the cost
    ledger, limits.yaml and the serving request logs."""
    if ctx.invoked_subcommand is not None:
        return
    import dagster as dg

    instance = dg.DagsterInstance.get()
    # The platform location's jobs are the only platform job names a metric label may take.
    platform_jobs = [job.name for job in platform_parts(tenant_folders()).jobs or ()]
    state = PlatformState(
        instance,
        Tenants.load(tenant_assets, platform_jobs=platform_jobs),
        resources_for(deployment())["lake"],
        history_days=history_days,
    )
    server, thread = serve(state, host, port)
    typer.echo(f"serving http://{host}:{server.server_port}/metrics (Ctrl-C stops)")
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


@app.command("write")
def write(
    check: bool = typer.Option(False, "--check", help="Exit 1 if a committed file is stale."),
) -> None:
    """Write the Prometheus alerting rules and the Grafana dashboard (deploy/observability/)
    from the exporter's series and the tenants' SLOs."""
    stale = []
    for path, text in dashboards.rendered().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            typer.echo(f"wrote {path}")
    if check and stale:
        names = ", ".join(str(p) for p in stale)
        typer.echo(f"out of date: {names}: run `mlplat metrics write`", err=True)
        raise typer.Exit(1)
    if not stale:
        typer.echo("ok: rules and dashboard are up to date")
