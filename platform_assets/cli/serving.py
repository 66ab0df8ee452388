"""`mlplat serve`: the online predict service of this deployment, on uvicorn, with the request
log's metrics on a port of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from platform_assets.observability import serving as serving_metrics
from platform_assets.serving.app import (
    DEFAULT_SPOOL_BYTES,
    ServeSettings,
    create_app,
    server,
    service_from_env,
)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    champion_ttl: float = typer.Option(
        5.0, "--champion-ttl", help="Seconds between checks of the platform's champions."
    ),
    log_rows: int = typer.Option(
        1000, "--log-rows", help="Request-log rows buffered before a batch is written."
    ),
    log_seconds: float = typer.Option(
        5.0, "--log-seconds", help="Longest wait before buffered request-log rows are written."
    ),
    spool_dir: Annotated[
        Path | None,
        typer.Option(
            "--spool-dir",
            help="Where request-log batches wait for the lake (default: "
            "<MLPLAT_DATA>/serving-spool).",
        ),
    ] = None,
    spool_mb: float = typer.Option(
        DEFAULT_SPOOL_BYTES / 2**20,
        "--spool-mb",
        help="The spool's bound in MiB: past it request-log rows are dropped (and counted).",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Address of the request log's /metrics."
    ),
    metrics_port: int = typer.Option(
        9465, "--metrics-port", help="Port of the request log's /metrics (Prometheus)."
    ),
) -> None:
    """Serve every tenant model's champion: POST /v1/models/<tenant>.<model>:predict."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ServeSettings(champion_ttl, log_rows, log_seconds, spool_dir, int(spool_mb * 2**20))
    service = service_from_env(settings)
    models = [(r.tenant, r.model) for r in service.routes.values()]
    metrics, thread = serving_metrics.serve(
        service.request_log.state, models, metrics_host, metrics_port
    )
    try:
        server(create_app(service), host, port).run()
    finally:
        metrics.shutdown()
        thread.join()
