"""`mlplat serve`: the online predict service of this deployment, on uvicorn."""

from __future__ import annotations

import typer

from platform_assets.serving.app import ServeSettings, create_app, server, service_from_env


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
) -> None:
    """Serve every tenant model's champion: POST /v1/models/<tenant>.<model>:predict."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    service = service_from_env(ServeSettings(champion_ttl, log_rows, log_seconds))
    server(create_app(service), host, port).run()
