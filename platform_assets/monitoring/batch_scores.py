"""`<tenant>/predictions/<model>`: the champion's batch scores of the model's current entities,
what the drift asset compares with the training set when there is no request log yet."""

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.features.feast_objects import apply_current
from platform_assets.governance.reconcile import champion_artifact, drift
from platform_assets.models.flavors import load_verified
from platform_assets.models.training import feature_columns
from platform_assets.resources.feature_store import FeastResource
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import Placement, asset_kwargs, team_asset
from platform_assets.tenancy.specs import ComputeResources, ModelSpec, TenantSpec

if TYPE_CHECKING:  # pandas loads in the steps, not with the code location
    import pandas as pd


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
    placement: Placement | None = None,
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
        placement=placement,
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
        found = champion_artifact(registered)
        if found is None:
            context.log.info(f"{registered} has no champion yet; nothing to score")
            return
        champion, recorded = found
        drifted = drift(mlflow, registered, champion)
        if drifted:
            context.log.warning(drifted)
        import pyarrow as pa

        entity_columns = spec.labels.entity_columns
        with meter(tenant.name, requested, pricing.catalog()) as usage:
            # Verified against the hash the champion was promoted on before it is loaded.
            model = load_verified(mlflow, registered, champion, recorded)
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
