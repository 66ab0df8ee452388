"""MLflow with its basic-auth app, configured by the platform: tenants read and log their own
runs; only the governance identity (not the server's admin) registers versions, moves aliases or
writes registry tags. Against a real `mlflow server --app-name basic-auth` on a free loopback
port with temp SQLite stores."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from platform_assets.governance.mlflow_auth import (
    GOVERNANCE_USER,
    configure_permissions,
    write_auth_config,
)
from platform_assets.models.flavors import load_verified, record_logged
from platform_assets.resources.mlflow import (
    MlflowAuthError,
    MlflowResource,
    read_tenant_password,
    write_tenant_passwords,
)

pytestmark = pytest.mark.slow
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-0123"
GOVERNANCE_PASSWORD = "governance-password-0123"
# MLflow's answer to a request its permissions refuse.
DENIED = r"error code 403 != 200\. Response body: 'Permission denied'"
TENANTS = {"payments": "payments-password-0123", "growth": "growth-password-0123"}
MODELS = {"payments": ["fraud_detector"], "growth": ["subscription_churn"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_auth")
    config = write_auth_config(root / "basic_auth.ini", f"sqlite:///{root / 'auth.db'}", ADMIN)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # The auth app signs its CSRF tokens with this; a deployment sets its own secret.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        # Its GenAI job runner is not used by the platform (nor started by the services stack).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin), "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{uri}/health", timeout=10).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or too busy to answer
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("mlflow server did not come up in 480 s")
    configure_permissions(uri, ADMIN, ADMIN_PASSWORD, GOVERNANCE_PASSWORD, TENANTS, MODELS)
    # Idempotent, and a second start may rotate a password.
    configure_permissions(uri, ADMIN, ADMIN_PASSWORD, GOVERNANCE_PASSWORD, TENANTS, MODELS)
    yield uri
    proc.terminate()
    proc.wait(30)


def client_as(monkeypatch, uri: str, user: str, password: str):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_only_the_governance_identity_moves_aliases_and_tags(server, monkeypatch):
    from mlflow.exceptions import MlflowException

    tenant = client_as(monkeypatch, server, "payments", TENANTS["payments"])
    run = tenant.create_run(tenant.get_experiment_by_name("payments/fraud_detector").experiment_id)
    governance = client_as(monkeypatch, server, GOVERNANCE_USER, GOVERNANCE_PASSWORD)
    version = governance.create_model_version(
        "payments.fraud_detector", "s3://b/m", run.info.run_id
    )
    governance.set_registered_model_alias("payments.fraud_detector", "champion", version.version)
    governance.set_model_version_tag("payments.fraud_detector", version.version, "k", "v")
    governance.set_registered_model_tag("payments.fraud_detector", "owner", "payments")

    tenant = client_as(monkeypatch, server, "payments", TENANTS["payments"])
    assert tenant.get_registered_model("payments.fraud_detector").aliases == {
        "champion": version.version
    }
    for attempt in (
        lambda: tenant.set_registered_model_alias("payments.fraud_detector", "champion", "1"),
        lambda: tenant.delete_registered_model_alias("payments.fraud_detector", "champion"),
        lambda: tenant.set_model_version_tag("payments.fraud_detector", "1", "eval_roc_auc", "1"),
        lambda: tenant.set_registered_model_tag("payments.fraud_detector", "k", "v"),
        lambda: tenant.create_model_version("payments.fraud_detector", "s3://b/m"),
        lambda: tenant.set_registered_model_alias("growth.subscription_churn", "champion", "1"),
    ):
        with pytest.raises(MlflowException, match=DENIED):
            attempt()


def test_the_governance_identity_is_not_an_admin(server, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.routes import CREATE_USER

    # Only the admin creates users: a leaked governance credential cannot mint new ones.
    created = requests.post(
        server + CREATE_USER,
        json={"username": "intruder", "password": "intruder-password-0123"},
        auth=(GOVERNANCE_USER, GOVERNANCE_PASSWORD),
        timeout=30,
    )
    assert (created.status_code, created.text) == (403, "Permission denied")
    tenant = client_as(monkeypatch, server, "growth", TENANTS["growth"])
    with pytest.raises(MlflowException, match=DENIED):
        tenant.delete_registered_model("payments.fraud_detector")


def test_a_tenant_run_is_logged_as_the_tenant_and_registered_by_governance(
    server, monkeypatch, tmp_path
):
    """The model step's split, in a materialized asset: `MlflowResource.run` as the tenant,
    `register_version` as the step's own (governance) identity."""
    import mlflow as mlflow_lib
    from mlflow.exceptions import MlflowException
    from sklearn.linear_model import LogisticRegression

    from platform_assets.models.component import register_version

    X = [[0.0], [1.0]]
    model = LogisticRegression().fit(X, [0, 1])
    credentials = write_tenant_passwords(tmp_path / "tenants", TENANTS)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", GOVERNANCE_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", GOVERNANCE_PASSWORD)
    name = "payments.fraud_detector"

    @dg.asset
    def trained(context, mlflow: MlflowResource):  # dagster refuses a string-annotated context
        with mlflow.run(context, "payments/fraud_detector", {"tenant": "payments"}, "payments"):
            assert os.environ["MLFLOW_TRACKING_USERNAME"] == "payments"
            mlflow_lib.log_metric("train_roc_auc", 0.8)
            info = mlflow_lib.sklearn.log_model(
                model, name="model", serialization_format="skops", pip_requirements=[]
            )
            with pytest.raises(MlflowException, match=DENIED):  # the tenant cannot register
                mlflow.client().create_model_version(name, f"models:/{info.model_id}")
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == GOVERNANCE_USER  # put back
        # Read back through the server's artifact proxy, as the platform's identity.
        digest = record_logged(mlflow, info.model_id, model, X, name)
        tags = {"dagster_run_id": context.run_id, "tenant": "payments"}
        first = register_version(mlflow, name, info.model_id, info.run_id, tags)
        # A retry of the same run replaces the version instead of orphaning it.
        again = register_version(mlflow, name, info.model_id, info.run_id, tags)
        return dg.MaterializeResult(
            metadata={
                "mlflow_run_id": info.run_id,
                "first": first,
                "again": again,
                "artifact_sha256": digest,
            }
        )

    resource = MlflowResource(tracking_uri=server, tenant_credentials=str(credentials))
    result = dg.materialize([trained], resources={"mlflow": resource})
    metadata = result.asset_materializations_for_node("trained")[0].metadata
    run_id, first, again = (metadata[k].value for k in ("mlflow_run_id", "first", "again"))
    client = resource.client()
    assert again == first + 1
    assert [v.version for v in client.search_model_versions(f"run_id = '{run_id}'")] == [str(again)]
    assert client.get_model_version(name, str(again)).tags == {
        "dagster_run_id": result.run_id,
        "tenant": "payments",
    }
    assert client.get_run(run_id).data.metrics == {"train_roc_auc": 0.8}
    loaded = load_verified(resource, name, again, metadata["artifact_sha256"].value)
    assert (loaded.predict_proba(X) == model.predict_proba(X)).all()


def test_a_tenant_credential_file_readable_by_others_is_refused(tmp_path):
    folder = write_tenant_passwords(tmp_path / "tenants", {"payments": "secret-password"})
    assert read_tenant_password(folder, "payments") == "secret-password"
    (folder / "payments").chmod(0o644)
    with pytest.raises(MlflowAuthError, match=r"readable by others \(mode 0644\); it must be 0600"):
        read_tenant_password(folder, "payments")


def test_a_missing_tenant_credential_is_refused(tmp_path):
    folder = write_tenant_passwords(tmp_path / "tenants", {"payments": "secret-password"})
    with pytest.raises(MlflowAuthError, match="no MLflow credential for tenant 'growth'"):
        read_tenant_password(folder, "growth")


def test_an_empty_tenant_credential_is_refused(tmp_path):
    folder = write_tenant_passwords(tmp_path / "tenants", {"payments": ""})
    with pytest.raises(MlflowAuthError, match="credential for tenant 'payments' is empty"):
        read_tenant_password(folder, "payments")


def test_a_tenant_named_like_a_platform_user_is_refused(server):
    with pytest.raises(MlflowAuthError, match="is one of the platform's MLflow users"):
        configure_permissions(
            server, ADMIN, ADMIN_PASSWORD, GOVERNANCE_PASSWORD, {GOVERNANCE_USER: "p" * 20}, {}
        )


def test_tenants_log_runs_to_their_own_experiments_only(server, monkeypatch):
    from mlflow.exceptions import MlflowException

    tenant = client_as(monkeypatch, server, "payments", TENANTS["payments"])
    own = tenant.get_experiment_by_name("payments/fraud_detector")
    run = tenant.create_run(own.experiment_id)
    tenant.log_metric(run.info.run_id, "train_roc_auc", 0.8)
    assert tenant.get_run(run.info.run_id).data.metrics == {"train_roc_auc": 0.8}
    other = tenant.get_experiment_by_name("growth/subscription_churn")  # readable
    with pytest.raises(MlflowException, match=DENIED):
        tenant.create_run(other.experiment_id)


def test_a_wrong_password_is_refused(server, monkeypatch):
    from mlflow.exceptions import MlflowException

    intruder = client_as(monkeypatch, server, "payments", "not-the-password")
    with pytest.raises(MlflowException):
        intruder.get_registered_model("payments.fraud_detector")
