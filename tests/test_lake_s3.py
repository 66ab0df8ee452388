"""The platform off one disk: a tenant's pipeline with the lake, Feast's offline sources, training
sets and MLflow artifacts in an S3 bucket, on moto's S3 server on loopback (a real HTTP API)."""

from __future__ import annotations

import boto3
import dagster as dg
import pytest

from bench.served_tenant import record_champion
from platform_assets.governance.workflow import open_store
from tests.platform_sandbox import sandbox

pytestmark = pytest.mark.materialize


def _keys(endpoint: str, bucket: str, prefix: str = "") -> set[str]:
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    return {
        o["Key"]
        for p in pages.paginate(Bucket=bucket, Prefix=prefix)
        for o in p.get("Contents", [])
    }


def test_tenant_pipeline_with_the_lake_and_artifacts_in_s3(
    monkeypatch, platform_home, instance, s3_bucket, s3_endpoint
):
    monkeypatch.setenv("MLPLAT_LAKE_URI", f"s3://{s3_bucket}/lake")
    monkeypatch.setenv("MLPLAT_MLFLOW_ARTIFACTS", f"s3://{s3_bucket}/mlflow")
    with sandbox(monkeypatch) as (_, build):
        defs = build()
        result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(instance=instance)
        assert result.success

        lake = defs.resources["lake"]
        keys = _keys(s3_endpoint, s3_bucket)
        for kind, name in [
            ("sources", "trips"),
            ("sources", "driver_churn_labels"),
            ("features", "driver_stats"),
            ("features", "zone_demand"),
            ("training_sets", "driver_churn"),
        ]:
            snapshot = lake.current("ridehail", kind, name)
            assert snapshot.uri.startswith(f"s3://{s3_bucket}/lake/ridehail/{kind}/{name}/")
            assert snapshot.uri.removeprefix(f"s3://{s3_bucket}/") in keys
            assert f"lake/ridehail/{kind}/{name}/current.json" in keys
            event = instance.get_latest_materialization_event(
                dg.AssetKey(["ridehail", kind, name])
            ).asset_materialization
            assert event.metadata["uri"].value == snapshot.uri
            assert event.tags["dagster/data_version"] == snapshot.version
        assert not (platform_home / "data" / "lake").exists()  # nothing on the local disk

        # Feast's offline sources are the feature snapshots in the bucket, with the endpoint.
        store = defs.resources["feast"].store("ridehail")
        source = store.get_feature_view("driver_stats").batch_source
        assert source.path == lake.current("ridehail", "features", "driver_stats").uri
        assert source.s3_endpoint_override == s3_endpoint

        # MLflow's artifacts (the model itself, the evaluation plots) are in the bucket too.
        client = defs.resources["mlflow"].client()
        version = client.get_model_version("ridehail.driver_churn", "1")
        assert version.tags["training_set_version"] == (
            lake.current("ridehail", "training_sets", "driver_churn").version
        )
        artifacts = _keys(s3_endpoint, s3_bucket, "mlflow/")
        assert any(k.endswith("/MLmodel") for k in artifacts), artifacts
        assert any(k.endswith("evaluation/roc_curve.png") for k in artifacts), artifacts

        # Batch scores by the champion land in the bucket as well. The champion is the
        # platform's (its governance store, with the artifact hash the model step recorded,
        # verified against the files read back from the bucket), mirrored to MLflow's alias.
        recorded = (
            instance.get_latest_materialization_event(
                dg.AssetKey(["ridehail", "models", "driver_churn"])
            )
            .asset_materialization.metadata["artifact_sha256"]
            .value
        )
        governance = open_store()
        try:
            record_champion(governance, "ridehail.driver_churn", 1, recorded)
        finally:
            governance.dispose()
        client.set_registered_model_alias("ridehail.driver_churn", "champion", "1")
        predictions = dg.AssetKey(["ridehail", "predictions", "driver_churn"])
        scored = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[predictions]
        )
        assert scored.success
        assert lake.current("ridehail", "predictions", "driver_churn").uri.startswith(
            f"s3://{s3_bucket}/lake/ridehail/predictions/driver_churn/"
        )

        # A Feast client with no endpoint in its environment still reads the offline store:
        # the endpoint travels with the source in the registry.
        labels = lake.read("ridehail", "sources", "driver_churn_labels").to_pandas().head(50)
        entity_df = labels[["driver_id", "zone_id", "label_ts"]].rename(
            columns={"label_ts": "event_timestamp"}
        )
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        df = store.get_historical_features(
            entity_df=entity_df, features=["driver_stats:trips_7d"]
        ).to_df()
        assert len(df) == 50 and df["trips_7d"].notna().any()
