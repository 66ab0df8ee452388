"""Champion deployment artefacts: a schema-valid KServe manifest (batch scores by the platform's
champion: tests/monitoring/test_batch_scores.py)."""

from __future__ import annotations

import copy

import pytest

from platform_assets.governance.deploy import render_inferenceservice, validate_inferenceservice
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
