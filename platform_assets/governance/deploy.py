"""What a champion deploys as: a KServe InferenceService manifest for GitOps, and a batch-scoring
asset that scores with the platform's champion (never with a drifted MLflow alias).
"""

import json
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.cost.metering import PricingResource, meter
from platform_assets.tenancy.assets import asset_kwargs, team_asset
from platform_assets.tenancy.limits import effective_resources
from platform_assets.tenancy.specs import ComputeResources, ModelSpec, TenantSpec
from resources.lake import LakeResource
from resources.mlflow import MlflowResource

SCHEMA = Path(__file__).with_name("schemas") / "inferenceservice_v1beta1.json"


@cache
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_inferenceservice(manifest: dict[str, Any]) -> None:
    """Raise ValueError naming the first field that breaks the InferenceService schema."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.path) or "<root>"
        raise ValueError(f"InferenceService invalid at {where}: {err.message}")


def model_storage_uri(download_uri: str) -> tuple[str, str]:
    """Where KServe's storage initializer fetches the model version from, and why it cannot
    (empty when it can). Through the tracking server's artifact proxy MLflow names artifacts
    `mlflow-artifacts:/<path>`; the object is `<MLPLAT_MLFLOW_ARTIFACTS>/<path>` in the bucket the
    server writes to (`--artifacts-destination`). In services and k8s it must be `s3://...`."""
    import os
    from urllib.parse import urlparse

    from platform_assets.execution.env import deployment

    uri = download_uri
    if download_uri.startswith("mlflow-artifacts:"):
        root = os.environ.get("MLPLAT_MLFLOW_ARTIFACTS", "")
        if not root:
            raise ValueError(
                f"spec.predictor.model.storageUri: MLflow gives {download_uri}, a path behind "
                "its artifact proxy; set MLPLAT_MLFLOW_ARTIFACTS to the bucket it writes to "
                "(its --artifacts-destination, s3://...)"
            )
        uri = f"{root.rstrip('/')}/{urlparse(download_uri).path.lstrip('/')}"
    if uri.startswith("s3://"):
        return uri, ""
    why = (
        f"{uri} is not in object storage: KServe's storage initializer fetches s3:// URIs, so "
        "this manifest is not deployable"
    )
    if deployment() != "local":
        raise ValueError(f"spec.predictor.model.storageUri: {why}")
    return uri, why


def render_inferenceservice(
    tenant: TenantSpec, registered: str, version: int, storage_uri: str
) -> dict[str, Any]:
    model = registered.partition(".")[2]
    storage_uri, not_deployable = model_storage_uri(storage_uri)
    res = effective_resources(tenant.name, tenant.resources)
    quantity = {"cpu": f"{res.cpu:g}", "memory": f"{res.memory_gib:g}Gi"}
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": f"{tenant.name}-{model}".replace("_", "-"),
            "namespace": tenant.namespace,
            "labels": {"mlplat/tenant": tenant.name, "mlplat/model": model},
            "annotations": {
                "mlplat/registered-model": registered,
                "mlplat/model-version": str(version),
                "mlplat/alias": "champion",
                # Locally the model is on this machine's disk: say so rather than claim a
                # manifest a cluster could run.
                **({"mlplat/not-deployable": not_deployable} if not_deployable else {}),
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": tenant.runner_service_account,
                "minReplicas": 1,
                "maxReplicas": 3,
                "model": {
                    # MLflow models are served by MLServer's mlflow runtime (KServe v2 protocol).
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    "resources": {"requests": quantity, "limits": {"memory": quantity["memory"]}},
                },
            }
        },
    }
    validate_inferenceservice(manifest)
    return manifest


def write_inferenceservice(
    tenant: TenantSpec, registered: str, version: int, storage_uri: str, root: Path
) -> Path:
    """Write `<root>/<tenant>/<model>.yaml` for the GitOps repo to pick up."""
    manifest = render_inferenceservice(tenant, registered, version, storage_uri)
    return write_manifest(tenant, registered, manifest, root)


def write_manifest(tenant: TenantSpec, registered: str, manifest: dict, root: Path) -> Path:
    """Write an already validated manifest, atomically (a reader never sees half a file)."""
    import os

    import yaml

    path = root / tenant.name / f"{registered.partition('.')[2]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(manifest, sort_keys=False))
    os.replace(tmp, path)
    return path


def batch_scores_asset(
    tenant: TenantSpec, spec: ModelSpec, requested: ComputeResources, source: Path | None = None
) -> dg.AssetsDefinition:
    """`<tenant>/predictions/<model>`: the latest training-set rows scored by the champion.

    The champion version comes from the platform's state, not from MLflow's alias (which anyone
    with EDIT on the registered model could move); a disagreeing alias is reported in the
    metadata. Produces nothing (no materialization) while the model has no champion yet.
    """
    registered = f"{tenant.name}.{spec.name}"
    kwargs = asset_kwargs(
        tenant,
        "model",
        ["predictions", spec.name],
        f"Batch scores of {spec.name} by the platform's champion version of {registered}.",
        {"scikitlearn", "mlflow", "parquet"},
        requested,
        source=source,
    )
    kwargs["tags"] = {**kwargs["tags"], "artefact": "batch_scores"}
    ts_key = dg.AssetKey([tenant.name, "training_sets", spec.name])

    @team_asset(**kwargs, deps=[ts_key], output_required=False)
    def batch_scores(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        mlflow: MlflowResource,
        pricing: PricingResource,
    ):
        from platform_assets.governance.reconcile import champion_of, drift

        champion = champion_of(registered)
        if champion is None:
            context.log.info(f"{registered} has no champion yet; nothing to score")
            return
        drifted = drift(mlflow, registered, champion)
        if drifted:
            context.log.warning(drifted)
        import mlflow as mlflow_lib
        import pyarrow as pa

        from platform_assets.models.training import feature_columns

        with meter(tenant.name, requested, pricing.catalog()) as usage:
            mlflow.client()  # points the mlflow module at our registry
            model = mlflow_lib.sklearn.load_model(f"models:/{registered}/{champion}")
            df = lake.read(tenant.name, "training_sets", spec.name).to_pandas()
            cols = feature_columns(df, spec.labels.entity_columns, spec.labels.label_column)
            out = df[[*spec.labels.entity_columns, "event_timestamp"]].copy()
            out["score"] = model.predict_proba(df[cols].astype("float64"))[:, 1]
            out["model_version"] = champion
            snapshot = lake.write(
                tenant.name,
                "predictions",
                spec.name,
                pa.Table.from_pandas(out, preserve_index=False),
            )
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(snapshot.version),
            metadata={
                "dagster/row_count": len(out),
                "uri": snapshot.uri,
                "data_version": snapshot.version,
                "registered_model": registered,
                "champion_version": champion,
                "alias_drift": drifted or "none",
                "mean_score": round(float(out["score"].mean()), 6),
                **usage.metadata(pricing.catalog()),
            },
        )

    return batch_scores
