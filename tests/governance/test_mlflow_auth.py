"""MLflow with its basic-auth app, configured by the platform: tenants read and log their own
runs; only the governance identity moves aliases or writes registry tags. Against a real
`mlflow server --app-name basic-auth` on a free loopback port with temp SQLite stores."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from platform_assets.governance.mlflow_auth import configure_permissions, write_auth_config

pytestmark = pytest.mark.slow
ADMIN, ADMIN_PASSWORD = "mlplat-governance", "governance-password-0123"
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
    configure_permissions(uri, ADMIN, ADMIN_PASSWORD, TENANTS, MODELS)
    configure_permissions(uri, ADMIN, ADMIN_PASSWORD, TENANTS, MODELS)  # idempotent
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

    admin = client_as(monkeypatch, server, ADMIN, ADMIN_PASSWORD)
    experiment = admin.get_experiment_by_name("payments/fraud_detector")
    run = admin.create_run(experiment.experiment_id)
    version = admin.create_model_version("payments.fraud_detector", "s3://b/m", run.info.run_id)
    admin.set_registered_model_alias("payments.fraud_detector", "champion", version.version)

    tenant = client_as(monkeypatch, server, "payments", TENANTS["payments"])
    assert tenant.get_registered_model("payments.fraud_detector").aliases == {
        "champion": version.version
    }
    for attempt in (
        lambda: tenant.set_registered_model_alias("payments.fraud_detector", "champion", "1"),
        lambda: tenant.delete_registered_model_alias("payments.fraud_detector", "champion"),
        lambda: tenant.set_model_version_tag("payments.fraud_detector", "1", "eval_roc_auc", "1"),
        lambda: tenant.set_registered_model_tag("payments.fraud_detector", "k", "v"),
    ):
        with pytest.raises(MlflowException, match="Permission denied"):
            attempt()


def test_tenants_log_runs_to_their_own_experiments_only(server, monkeypatch):
    from mlflow.exceptions import MlflowException

    tenant = client_as(monkeypatch, server, "payments", TENANTS["payments"])
    own = tenant.get_experiment_by_name("payments/fraud_detector")
    run = tenant.create_run(own.experiment_id)
    tenant.log_metric(run.info.run_id, "train_roc_auc", 0.8)
    assert tenant.get_run(run.info.run_id).data.metrics == {"train_roc_auc": 0.8}
    other = tenant.get_experiment_by_name("growth/subscription_churn")  # readable
    with pytest.raises(MlflowException, match="Permission denied"):
        tenant.create_run(other.experiment_id)


def test_a_wrong_password_is_refused(server, monkeypatch):
    from mlflow.exceptions import MlflowException

    intruder = client_as(monkeypatch, server, "payments", "not-the-password")
    with pytest.raises(MlflowException):
        intruder.get_registered_model("payments.fraud_detector")
