"""Champion deployment artefacts: a schema-valid KServe manifest and batch scores from @champion."""

from __future__ import annotations

import copy

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from platform_assets.governance.deploy import (
    batch_scores_asset,
    render_inferenceservice,
    validate_inferenceservice,
)
from tests.governance.conftest import MODEL


def test_manifest_is_a_valid_inferenceservice(gov_sandbox):
    tenant = gov_sandbox.catalogs["payments"].tenant
    manifest = render_inferenceservice(tenant, MODEL, 7, "s3://mlflow/1/models/m-1/artifacts")
    assert manifest["metadata"]["name"] == "payments-fraud-detector"
    assert manifest["metadata"]["namespace"] == "tenant-payments"
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
    assert model["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}


def test_the_storage_uri_is_the_model_in_object_storage(gov_sandbox, monkeypatch):
    tenant = gov_sandbox.catalogs["payments"].tenant
    monkeypatch.setenv("MLPLAT_ENV", "services")
    monkeypatch.setenv("MLPLAT_MLFLOW_ARTIFACTS", "s3://mlplat/mlflow/")
    manifest = render_inferenceservice(tenant, MODEL, 7, "mlflow-artifacts:/1/models/m-1/artifacts")
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == (
        "s3://mlplat/mlflow/1/models/m-1/artifacts"
    )
    assert "mlplat/not-deployable" not in manifest["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("env", "uri", "message"),
    [
        (
            {"MLPLAT_MLFLOW_ARTIFACTS": ""},
            "mlflow-artifacts:/1/m",
            "spec.predictor.model.storageUri: MLflow gives mlflow-artifacts:/1/m, a path behind "
            "its artifact proxy; set MLPLAT_MLFLOW_ARTIFACTS",
        ),
        (
            {"MLPLAT_MLFLOW_ARTIFACTS": "/srv/mlflow"},
            "mlflow-artifacts:/1/m",
            "spec.predictor.model.storageUri: /srv/mlflow/1/m is not in object storage",
        ),
    ],
)
def test_outside_local_a_model_not_in_object_storage_is_refused(
    gov_sandbox, monkeypatch, env, uri, message
):
    tenant = gov_sandbox.catalogs["payments"].tenant
    monkeypatch.setenv("MLPLAT_ENV", "k8s")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError) as exc:
        render_inferenceservice(tenant, MODEL, 7, uri)
    assert str(exc.value).startswith(message)


def test_locally_the_manifest_says_it_is_not_deployable(gov_sandbox, monkeypatch):
    monkeypatch.setenv("MLPLAT_ENV", "local")
    tenant = gov_sandbox.catalogs["payments"].tenant
    manifest = render_inferenceservice(tenant, MODEL, 7, "/data/mlflow/artifacts/1/m")
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == "/data/mlflow/artifacts/1/m"
    assert manifest["metadata"]["annotations"]["mlplat/not-deployable"] == (
        "/data/mlflow/artifacts/1/m is not in object storage: KServe's storage initializer "
        "fetches s3:// URIs, so this manifest is not deployable"
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("metadata", "name"), "Fraud_Detector", "metadata.name: 'Fraud_Detector' does not match"),
        (
            ("spec", "predictor", "model", "protocolVersion"),
            "v3",
            "protocolVersion: 'v3' is not one",
        ),
        (("spec", "predictor", "minReplicas"), -1, "minReplicas: -1 is less than the minimum"),
        (("spec", "predictor", "model", "resources", "requests", "cpu"), "lots", "cpu: 'lots'"),
        (("spec", "predicter"), {}, "spec: Additional properties are not allowed"),
    ],
)
def test_invalid_manifests_fail_naming_the_field(gov_sandbox, path, value, message):
    tenant = gov_sandbox.catalogs["payments"].tenant
    manifest = copy.deepcopy(render_inferenceservice(tenant, MODEL, 7, "s3://b/m"))
    node = manifest
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ValueError, match="InferenceService invalid at") as exc:
        validate_inferenceservice(manifest)
    assert message.split(": ", 1)[1] in str(exc.value)
    assert message.split(": ", 1)[0] in str(exc.value)


@pytest.mark.materialize
def test_batch_scores_use_the_platform_champion_not_a_drifted_alias(gov_sandbox):
    """Attack: MLflow's `champion` alias pointed at a merely pending version; predictions must
    still score with the platform's champion and say the alias drifted."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from platform_assets.cost.metering import PricingResource
    from resources.lake import LakeResource

    sb = gov_sandbox
    catalog = sb.catalogs["payments"]
    spec = catalog.models["fraud_detector"]
    lake = LakeResource(root=str(sb.deploy_dir.parent / "lake"))
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "card_id": [f"c{i}" for i in range(40)],
            "merchant_id": ["m1"] * 40,
            "event_timestamp": pd.date_range("2026-01-01", periods=40, freq="h", tz="UTC"),
            "amount": rng.normal(size=40),
            "is_fraud": [0, 1] * 20,
            "split": ["train"] * 40,
        }
    )
    lake.write("payments", "training_sets", "fraud_detector", pa.Table.from_pandas(df))
    asset = batch_scores_asset(catalog.tenant, spec, catalog.tenant.resources)
    resources = {"lake": lake, "mlflow": sb.mlflow, "pricing": PricingResource()}
    tags = asset.tags_by_key[asset.key]
    assert (tags["tenant"], tags["asset_type"], tags["artefact"]) == (
        "payments",
        "model",
        "batch_scores",
    )
    assert asset.key == dg.AssetKey(["payments", "predictions", "fraud_detector"])

    # No champion yet: the run succeeds and materializes nothing.
    result = dg.materialize([asset], resources=resources, instance=sb.instance)
    assert result.success and result.get_asset_materialization_events() == []

    sb.mlflow.client()
    versions = []
    for flip in (False, True):
        labels = 1 - df["is_fraud"] if flip else df["is_fraud"]
        model = LogisticRegression().fit(df[["amount"]], labels)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=MODEL, pip_requirements=["scikit-learn"]
            )
        versions.append(int(info.registered_model_version))
    champion, pending = versions
    with sb.store.transaction("payments") as conn:
        sb.store.set_champion(conn, MODEL, champion, None, None)
    sb.mlflow.client().set_registered_model_alias(MODEL, "champion", str(pending))
    result = dg.materialize([asset], resources=resources, instance=sb.instance)
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["champion_version"].value == champion
    assert md["alias_drift"].value == (
        f"MLflow alias {MODEL}@champion points at v{pending} but the platform's champion is "
        f"v{champion}; scoring and serving use the platform's"
    )
    assert md["dagster/row_count"].value == 40
    scores = lake.read("payments", "predictions", "fraud_detector").to_pandas()
    assert set(scores["model_version"]) == {champion}
    assert scores["score"].between(0, 1).all()
