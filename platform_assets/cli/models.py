"""`mlplat training-set reproduce`: rebuild a model version's training set and prove it equal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from platform_assets.env import deployment
from platform_assets.models.manifest import ReproduceError, load
from platform_assets.models.manifest import reproduce as rebuild
from platform_assets.resources.deployment import resources_for

app = typer.Typer(help="Training sets: manifests and exact rebuilds.", no_args_is_help=True)


@app.command()
def reproduce(
    model: Annotated[str, typer.Argument(help="<tenant>/<model>, e.g. ridehail/driver_churn")],
    version: Annotated[int, typer.Option("--version", help="The model version (MLflow)")],
) -> None:
    """Rebuild the training set model version N was trained on, from the lake snapshots its
    manifest names, and check its content hash against the manifest's."""
    from mlflow.exceptions import MlflowException

    tenant, _, name = model.partition("/")
    if not tenant or not name or "/" in name:
        raise typer.BadParameter(f"{model!r} is not <tenant>/<model>", param_hint="MODEL")
    resources = resources_for(deployment())
    registered = f"{tenant}.{name}"
    try:
        client = resources["mlflow"].client()  # type: ignore[attr-defined]
        model_version = client.get_model_version(registered, str(version))
        trained_on = model_version.tags.get("training_set_version")
        if not trained_on:
            raise ReproduceError(
                f"model {registered} version {version} has no training_set_version tag"
            )
        lake = resources["lake"]
        # The model version was registered right after its training set was built.
        registered_at = datetime.fromtimestamp(model_version.creation_timestamp / 1000, UTC)
        manifest = load(lake, tenant, name, trained_on, registered_at)  # type: ignore[arg-type]
        result = rebuild(lake, manifest)  # type: ignore[arg-type]
    except ReproduceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except MlflowException as exc:  # an unknown model or version
        typer.echo(f"error: model {registered} version {version}: {exc}", err=True)
        raise typer.Exit(1) from exc
    built = manifest["training_set"]
    typer.echo(
        f"reproduced training set {tenant}/training_sets/{name}@{built['version']} of model "
        f"{registered} version {version}: {result.rows} rows, content hash {result.content_hash} "
        f"= the manifest's (built {manifest['built_at']})"
    )
