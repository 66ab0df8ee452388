"""What a committed move changes outside the platform database: MLflow aliases and tags and the
deployment manifest, and putting the aliases back when MLflow fails halfway."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform_assets.governance import rbac
from platform_assets.governance.deploy import render_inferenceservice, write_manifest
from platform_assets.tenancy.catalog import TenantCatalog

ALIASES = ("champion", "previous", "challenger")


class MoveFailed(RuntimeError):
    """MLflow could not mirror a committed move; it was undone and the failure recorded."""


@dataclass
class Effects:
    """What to do outside the database once it has committed: alias moves, tags, manifests."""

    aliases: dict[str, int | None] = field(default_factory=dict)  # alias -> version (None: drop)
    tags: list[tuple[int, str, str]] = field(default_factory=list)
    manifest: tuple[Any, int, dict] | None = None  # (tenant spec, version, rendered manifest)


def current_aliases(mlflow: Any, name: str) -> dict[str, int]:
    model = mlflow.client().get_registered_model(name)
    return {a: int(v) for a, v in model.aliases.items() if a in ALIASES}


def set_aliases(mlflow: Any, name: str, target: dict[str, int | None]) -> None:
    client = mlflow.client()
    for alias, version in target.items():
        if version is None:
            if alias in current_aliases(mlflow, name):
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, str(version))


def restore_aliases(mlflow: Any, name: str, restored: dict[str, int]) -> None:
    """Put the aliases back as they were before a move (an alias that was not there is dropped)."""
    set_aliases(mlflow, name, {a: restored.get(a) for a in ALIASES})


def apply_effects(mlflow: Any, deploy_dir: Path | None, name: str, effects: Effects) -> None:
    """Mirror a committed move in MLflow and the deployment manifest."""
    if effects.aliases:
        set_aliases(mlflow, name, effects.aliases)
    client = mlflow.client() if effects.tags else None
    for version, key, value in effects.tags:
        client.set_model_version_tag(name, str(version), key, value)
    if effects.manifest is not None and deploy_dir is not None:
        tenant, version, manifest = effects.manifest
        write_manifest(tenant, name, manifest, deploy_dir)


def challenger_of(mlflow: Any, name: str) -> int | None:
    mv = mlflow.version_by_alias(name, "challenger")
    return int(mv.version) if mv is not None else None


def render_manifest(
    mlflow: Any, deploy_dir: Path | None, catalog: TenantCatalog, name: str, version: int
):
    """The deployment manifest, rendered and validated before anything moves."""
    if deploy_dir is None:
        return None
    uri = mlflow.client().get_model_version_download_uri(name, str(version))
    try:
        manifest = render_inferenceservice(catalog.tenant, name, version, uri)
    except ValueError as exc:
        raise rbac.Refused(
            "deployment-manifest",
            f"{name} v{version} cannot be deployed: {exc} (from tenant "
            f"{catalog.tenant.name}'s resources)",
        ) from exc
    return (catalog.tenant, version, manifest)


def manifest_path(deploy_dir: Path | None, catalog: TenantCatalog, name: str) -> str | None:
    if deploy_dir is None:
        return None
    return str(deploy_dir / catalog.tenant.name / f"{name.partition('.')[2]}.yaml")
