"""What a champion deploys as: a KServe InferenceService manifest for GitOps, and a batch-scoring
asset that scores the model's current entities with the platform's champion (never with a
drifted MLflow alias).
"""

import json
import threading
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import asset_kwargs, team_asset
from platform_assets.tenancy.limits import effective_resources
from platform_assets.tenancy.specs import ComputeResources, ModelSpec, TenantSpec
from platform_assets.resources.feature_store import FeastResource
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.mlflow import MlflowResource

if TYPE_CHECKING:  # pandas loads in the steps, not with the code location
    import pandas as pd

    from platform_assets.k8s.policy import PolicySet

SCHEMA = Path(__file__).with_name("schemas") / "inferenceservice_v1beta1.json"
# The regopy interpreter takes its input and then answers a query: one evaluation at a time.
_POLICY_LOCK = threading.Lock()


@cache
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@cache
def _pod_policies() -> "PolicySet":
    """The pod policies, loaded once per process, not on every champion change."""
    from platform_assets.k8s.policy import PolicySet

    return PolicySet("pods")


def manifest_name(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    return f"InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def validate_inferenceservice(manifest: dict[str, Any], tenant: TenantSpec) -> None:
    """Raise ValueError naming the first field that breaks the InferenceService schema, else
    every pod policy the predictor's pods would break (the same Rego Gatekeeper enforces)."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.path) or "<root>"
        raise ValueError(f"InferenceService invalid at {where}: {err.message}")
    # render.py imports nothing of governance, and only here: no cycle, no k8s code at import.
    from platform_assets.k8s.render import pod_parameters

    # The policies read only the parameters of the tenant the pod is labelled for (and the
    # platform's registries), so this tenant's are the platform's whole verdict; a manifest
    # labelled for another tenant is refused as one the platform does not know.
    review = {"review": {"object": manifest}, "parameters": pod_parameters({tenant.name: tenant})}
    with _POLICY_LOCK:
        violations = _pod_policies().evaluate(review, manifest_name(manifest))
    if violations:
        raise ValueError("; ".join(str(v) for v in violations))


def model_storage_uri(download_uri: str) -> tuple[str, str]:
    """Where KServe's storage initializer fetches the model version from, and why it cannot
    (empty when it can). Through the tracking server's artifact proxy MLflow names artifacts
    `mlflow-artifacts:/<path>`; the object is `<MLPLAT_MLFLOW_ARTIFACTS>/<path>` in the bucket the
    server writes to (`--artifacts-destination`). In services and k8s it must be `s3://...`."""
    import os
    from urllib.parse import urlparse

    from platform_assets.env import deployment

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
    """The champion's InferenceService, schema-valid and passing every pod policy, or a
    ValueError saying why not."""
    from platform_assets.k8s.config import quantity
    from platform_assets.k8s.steps import label_value
    from platform_assets.k8s.values import container_security_context
    from platform_assets.tenancy.locations import location_of

    model = registered.partition(".")[2]
    storage_uri, not_deployable = model_storage_uri(storage_uri)
    res = effective_resources(tenant.name, tenant.resources)
    amounts = {"cpu": quantity(res.cpu), "memory": quantity(res.memory_gib, "Gi")}
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": f"{tenant.name}-{model}".replace("_", "-"),
            "namespace": tenant.namespace,
            # KServe copies these onto the predictor's pods: what the cost tool attributes
            # serving spend by (pods/cost_labels). The code location as step pods carry it.
            "labels": {
                "mlplat/tenant": label_value(tenant.name),
                "mlplat/code-location": label_value(location_of(tenant.name)),
                "mlplat/model": label_value(model),
            },
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
                "serviceAccountName": tenant.serving_service_account,
                "minReplicas": 1,
                "maxReplicas": 3,
                # No UID: the serving runtime's image (MLServer) names its own non-root user.
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                # The root filesystem is read-only; the server writes temporary files here.
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "model": {
                    # MLflow models are served by MLServer's mlflow runtime (KServe v2 protocol).
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    # Limits equal requests, as for steps: billed on what it reserves.
                    "resources": {"requests": dict(amounts), "limits": dict(amounts)},
                    "securityContext": container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                },
            }
        },
    }
    validate_inferenceservice(manifest, tenant)
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


def scoring_time(lake: LakeResource, resolved: dict) -> datetime:
    """The point in time batch scores are as of: the newest feature row the model's views hold,
    never later than now. Scoring at the wall clock would give every entity whose features
    stopped arriving (late pipelines, a paused source, the demo's generated past) missing
    values past the views' TTL; the staleness is reported beside the scores instead."""
    import pyarrow.compute as pc

    newest = []
    for owner, fs in resolved.values():
        table = lake.read(owner, "features", fs.name)
        latest = pc.max(table[fs.timestamp_field]).as_py()
        if latest is not None:
            newest.append(latest if latest.tzinfo else latest.replace(tzinfo=UTC))
    if not newest:
        raise ValueError(
            f"the feature views {', '.join(fs.name for _, fs in resolved.values())} "
            "hold no rows: nothing to score"
        )
    return min(max(newest), datetime.now(UTC))


def recent_entities(
    df: "pd.DataFrame", entity_columns: list[str], window_days: float
) -> "pd.DataFrame":
    """The distinct entities of the training set's last `window_days` of label times: the
    population the model is currently asked about."""
    import pandas as pd

    recent = df[
        df["event_timestamp"] >= df["event_timestamp"].max() - pd.Timedelta(days=window_days)
    ]
    return recent[entity_columns].drop_duplicates().reset_index(drop=True)


def batch_scores_asset(
    tenant: TenantSpec,
    spec: ModelSpec,
    resolved: dict,
    requested: ComputeResources,
    source: Path | None = None,
) -> dg.AssetsDefinition:
    """`<tenant>/predictions/<model>`: the champion's scores of the model's current entities.

    The entities are those of the training set's most recent window (`monitoring.window_days`
    of label times); their features come from the model's FeatureService over the feature
    snapshots committed last, point-in-time at `scoring_time` (Feast's
    `get_historical_features`, as for training: the same join, no training/serving skew).
    The champion version comes from the platform's state, not from MLflow's alias (which anyone
    with EDIT on the registered model could move); a disagreeing alias is reported in the
    metadata. Produces nothing (no materialization) while the model has no champion yet.
    """
    registered = f"{tenant.name}.{spec.name}"
    kwargs = asset_kwargs(
        tenant,
        "predictions",
        ["predictions", spec.name],
        f"Batch scores of {spec.name}'s current entities by the platform's champion version "
        f"of {registered}, with the feature values they were scored on.",
        {"scikitlearn", "mlflow", "feast", "parquet"},
        requested,
        source=source,
    )
    kwargs["tags"] = {**kwargs["tags"], "artefact": "batch_scores"}
    ts_key = dg.AssetKey([tenant.name, "training_sets", spec.name])
    feature_keys = [dg.AssetKey([owner, "features", fs.name]) for owner, fs in resolved.values()]

    @team_asset(**kwargs, deps=[ts_key, *feature_keys], output_required=False)
    def batch_scores(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        feast: FeastResource,
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

        from platform_assets.features.feast_objects import apply_current
        from platform_assets.models.training import feature_columns

        entity_columns = spec.labels.entity_columns
        with meter(tenant.name, requested, pricing.catalog()) as usage:
            mlflow.client()  # points the mlflow module at our registry
            model = mlflow_lib.sklearn.load_model(f"models:/{registered}/{champion}")
            store = feast.store(tenant.name)
            service, _ = apply_current(lake, store, tenant.name, tenant.owners[0], spec, resolved)
            training = lake.read(tenant.name, "training_sets", spec.name).to_pandas()
            # The columns in the order the model was trained on.
            cols = feature_columns(training, entity_columns, spec.labels.label_column)
            as_of = scoring_time(lake, resolved)
            entities = recent_entities(training, entity_columns, spec.monitoring.window_days)
            entities["event_timestamp"] = as_of
            df = store.get_historical_features(entity_df=entities, features=service).to_df()
            out = df[[*entity_columns, "event_timestamp"]].copy()
            X = df[cols].astype("float64")
            out["score"] = model.predict_proba(X)[:, 1]
            out["model_version"] = champion
            # What each score was computed from: the drift asset compares these values with
            # the training set's when there is no request log yet.
            out[cols] = X
            snapshot = lake.write(
                tenant.name,
                "predictions",
                spec.name,
                pa.Table.from_pandas(out, preserve_index=False),
            )
        staleness = datetime.now(UTC) - as_of
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(snapshot.version),
            metadata={
                "dagster/row_count": len(out),
                "uri": snapshot.uri,
                "data_version": snapshot.version,
                "registered_model": registered,
                "champion_version": champion,
                "alias_drift": drifted or "none",
                "features_as_of": dg.MetadataValue.timestamp(as_of),
                "feature_staleness_hours": round(staleness.total_seconds() / 3600, 2),
                "entities_window_days": spec.monitoring.window_days,
                "mean_score": round(float(out["score"].mean()), 6),
                "missing_feature_share": round(float(X.isna().to_numpy().mean()), 6),
                **usage.metadata(pricing.catalog()),
            },
        )

    return batch_scores
