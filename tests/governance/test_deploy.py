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
