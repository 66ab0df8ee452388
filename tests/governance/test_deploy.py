"""Champion deployment artefacts: a KServe manifest valid by the schema and passing the pod
policies (batch scores by the platform's champion: tests/monitoring/test_batch_scores.py)."""

from __future__ import annotations

import copy

import pytest

from platform_assets.governance.deploy import render_inferenceservice, validate_inferenceservice
from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.render import pod_parameters
from tests.governance.conftest import MODEL

WHERE = "InferenceService tenant-payments/payments-fraud-detector"


def test_manifest_is_a_valid_inferenceservice(gov_sandbox):
    tenant = gov_sandbox.catalogs["payments"].tenant
    manifest = render_inferenceservice(tenant, MODEL, 7, "s3://mlflow/1/models/m-1/artifacts")
    assert manifest["metadata"]["name"] == "payments-fraud-detector"
    assert manifest["metadata"]["namespace"] == "tenant-payments"
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
    assert model["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}
    assert model["resources"]["limits"] == model["resources"]["requests"]


def test_manifest_passes_every_pod_policy(gov_sandbox):
    """Evaluated here by a PolicySet of its own with every tenant's parameters, as Gatekeeper's
    Constraints carry them, not by the renderer's."""
    tenants = {name: c.tenant for name, c in gov_sandbox.catalogs.items()}
    manifest = render_inferenceservice(tenants["payments"], MODEL, 7, "s3://b/m")
    review = {"review": {"object": manifest}, "parameters": pod_parameters(tenants)}
    assert PolicySet("pods").evaluate(review, WHERE) == []
    assert manifest["metadata"]["labels"] == {
        "mlplat/tenant": "payments",
        "mlplat/code-location": "payments",
        "mlplat/model": "fraud_detector",
    }
    # Its own serving account, bound to no role (the runner's may start Jobs and read Pods).
    assert manifest["spec"]["predictor"]["serviceAccountName"] == "payments-serving"


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
        (("spec", "canary"), {}, "spec.canary: {} is not of type 'array'"),
        (
            ("spec", "predictor", "model", "securityContext", "runAsNonRoot"),
            "yes",
            "runAsNonRoot: 'yes' is not of type 'boolean'",
        ),
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
        validate_inferenceservice(manifest, tenant)
    assert message.split(": ", 1)[1] in str(exc.value)
    assert message.split(": ", 1)[0] in str(exc.value)


def edited(manifest: dict, path: tuple, value) -> dict:
    """A copy of `manifest` with `path` set to `value` (None: removed)."""
    out = copy.deepcopy(manifest)
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


MODEL_PATH = ("spec", "predictor", "model")
CTX = (*MODEL_PATH, "securityContext")


KSERVE = "container 'kserve-container'"
ACCOUNT = "pod of tenant 'payments' uses service account 'growth-runner', not its own"


@pytest.mark.parametrize(
    ("path", "value", "policy", "message"),
    [
        ((*CTX, "privileged"), True, "no_privileged", f"{KSERVE} is privileged"),
        ((*MODEL_PATH, "resources", "limits"), None, "requests_limits", f"{KSERVE} has no cpu"),
        (
            (*CTX, "allowPrivilegeEscalation"),
            True,
            "no_privilege_escalation",
            f"{KSERVE} does not set allowPrivilegeEscalation: false",
        ),
        (
            (*CTX, "readOnlyRootFilesystem"),
            False,
            "read_only_root_fs",
            f"{KSERVE} does not set readOnlyRootFilesystem: true",
        ),
        ((*CTX, "runAsUser"), 0, "non_root", f"{KSERVE} runs as UID 0"),
        (("spec", "predictor", "hostNetwork"), True, "no_host_access", "pod sets hostNetwork"),
        (
            (*MODEL_PATH, "image"),
            "docker.io/evil:latest",
            "allowed_registries",
            f"{KSERVE} uses image 'docker.io/evil:latest', not from",
        ),
        (("spec", "predictor", "serviceAccountName"), "growth-runner", "tenant_placement", ACCOUNT),
        (
            ("metadata", "labels", "mlplat/model"),
            None,
            "cost_labels",
            "pod has no cost-attribution label 'mlplat/model'",
        ),
    ],
)
def test_manifest_breaking_a_pod_policy_is_refused_naming_it(
    gov_sandbox, path, value, policy, message
):
    tenant = gov_sandbox.catalogs["payments"].tenant
    manifest = edited(render_inferenceservice(tenant, MODEL, 7, "s3://b/m"), path, value)
    with pytest.raises(ValueError) as exc:
        validate_inferenceservice(manifest, tenant)
    assert f"{WHERE}: policy pods/{policy}: {message}" in str(exc.value)


def test_every_violation_is_named(gov_sandbox):
    tenant = gov_sandbox.catalogs["payments"].tenant
    manifest = render_inferenceservice(tenant, MODEL, 7, "s3://b/m")
    manifest = edited(edited(manifest, (*CTX, "privileged"), True), (*CTX, "runAsUser"), 0)
    with pytest.raises(ValueError) as exc:
        validate_inferenceservice(manifest, tenant)
    assert str(exc.value) == (
        f"{WHERE}: policy pods/no_privileged: container 'kserve-container' is privileged; "
        f"{WHERE}: policy pods/non_root: container 'kserve-container' runs as UID 0"
    )
