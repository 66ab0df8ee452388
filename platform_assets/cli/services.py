"""`mlplat services up|status|demo|down`: the services deployment on this machine."""

from __future__ import annotations

import json

import typer

from platform_assets.services import stack
from platform_assets.services.demo import main

app = typer.Typer(help="The services deployment (S3, MLflow server, Dagster on Postgres).")


@app.command()
def up() -> None:
    """Start what the services deployment needs that is not running; wait until healthy."""
    started = stack.up(report=typer.echo)
    for name, info in stack.status(started.folder).items():
        where = "started here" if info["started_here"] else "already running"
        typer.echo(
            f"{name:10} {info['url']}  ({where}, {'healthy' if info['healthy'] else 'DOWN'})"
        )
    typer.echo(f"environment: {started.env_file} (source it to use the deployment)")


@app.command("status")
def status_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Each component's URL and health; exit 1 when one is unhealthy."""
    try:
        report = stack.status()
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for name, info in report.items():
            typer.echo(f"{name:10} {info['url']}  {'healthy' if info['healthy'] else 'DOWN'}")
    if not all(info["healthy"] for info in report.values()):
        raise typer.Exit(1)


@app.command()
def demo(
    log: str = typer.Option("", help="Full log file (default: .services/demo.log)."),
) -> None:
    """Every tenant's pipeline through the webserver's run queue, promotion under the daemon."""
    main(log or None)


@app.command()
def down() -> None:
    """Stop exactly the processes `up` started, by pid, and drop the databases it created."""
    stack.down(report=typer.echo)
