"""Identity sources: OIDC ID tokens (signed by a key the test generates), the proxy header from
trusted addresses only, launch proofs on runs, reserved platform identities."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from platform_assets.cli import governance as cli
from platform_assets.governance import deploy, service
from platform_assets.governance.demo_idp import LocalIdP
from platform_assets.governance.identity import (
    Identity,
    IdentityRefused,
    ProxySettings,
    cli_identity,
    job_identity,
    launch_tags,
    proxy_identity,
    run_launcher,
    sensor_proof,
    trained_by,
    verify_token,
)
from platform_assets.governance.keys import AuditKeys
from tests.governance.conftest import APPROVER, APPROVER2, MODEL, SENSOR

KEYS = AuditKeys.from_secrets(["identity test key 0123456789"])
runner = CliRunner()


def test_a_valid_token_proves_its_email(idp):
    assert verify_token(idp.issue(APPROVER), idp.settings) == Identity(APPROVER, "oidc")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda idp, tmp: idp.issue(APPROVER, ttl=-120),
            "ID token rejected: Signature has expired",
        ),
        (lambda idp, tmp: idp.issue(APPROVER, aud="other-app"), "Audience doesn't match"),
        (lambda idp, tmp: idp.issue(APPROVER, iss="https://evil.example"), "Invalid issuer"),
        (
            lambda idp, tmp: LocalIdP(tmp / "other").issue(APPROVER),
            "ID token rejected: Unable to find a signing key that matches",
        ),
        (lambda idp, tmp: idp.issue(APPROVER, email_verified=False), "is not verified"),
        (lambda idp, tmp: "not.a.token", "ID token rejected: Invalid header padding"),
    ],
)
def test_bad_tokens_are_refused_naming_why(idp, tmp_path, make, message):
    with pytest.raises(IdentityRefused) as exc:
        verify_token(make(idp, tmp_path), idp.settings)
    assert str(exc.value).startswith("refused by rule invalid-token: ")
    assert message in str(exc.value)


def test_a_token_signed_with_another_key_under_the_idps_key_id_is_refused(idp, tmp_path):
    import time

    import jwt

    forger = LocalIdP(tmp_path / "forger")
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": idp.audience, "email": APPROVER2}
    forged = jwt.encode(
        {**claims, "iat": now, "exp": now + 60},
        forger._key,
        algorithm="ES256",
        headers={"kid": idp.kid},
    )
    with pytest.raises(IdentityRefused, match="ID token rejected: Signature verification failed"):
        verify_token(forged, idp.settings)


def test_reserved_identities_cannot_be_claimed_by_token_or_flag(idp):
    with pytest.raises(
        IdentityRefused, match="'mlplat/promotion_sensor' in the ID token is reserved"
    ):
        verify_token(idp.issue("mlplat/promotion_sensor"), idp.settings)
    with pytest.raises(IdentityRefused, match="in --as/MLPLAT_USER is reserved"):
        cli_identity("MLPLAT/Promotion_Sensor", "")


def test_cli_token_outside_local_records_a_verified_identity(gov_sandbox, idp, monkeypatch):
    sb = gov_sandbox
    monkeypatch.setattr(service, "deployment_governance", sb.governance)
    v1 = sb.register(0.30)
    sb.governance().propose(MODEL, v1, SENSOR)
    monkeypatch.setenv("MLPLAT_ENV", "services")
    # The sandbox's MLflow keeps artifacts on its disk; a services deployment's are in the
    # bucket, which is what outside `local` the deployment manifest requires.
    monkeypatch.setattr(
        deploy,
        "model_storage_uri",
        lambda uri: (f"s3://mlplat/mlflow/{uri.rsplit('/', 1)[-1]}", ""),
    )
    token = idp.issue(APPROVER)
    mismatch = runner.invoke(
        cli.app, ["approve", MODEL, str(v1), "--as", APPROVER2, "--token", token]
    )
    assert mismatch.exit_code == 2
    assert (
        f"refused by rule identity-mismatch: --as/MLPLAT_USER says {APPROVER2} but the ID token "
        f"is {APPROVER}" in " ".join(mismatch.output.split())
    )
    result = runner.invoke(cli.app, ["approve", MODEL, str(v1)], env={"MLPLAT_ID_TOKEN": token})
    assert result.exit_code == 0, result.output
    approval = [r for r in sb.store.records() if r.action == "approve"][-1]
    assert (approval.actor, approval.identity) == (APPROVER, "oidc")


def test_proxy_header_is_believed_only_from_trusted_proxies():
    assert ProxySettings.parse("").trusted == ()  # by default no address is trusted
    trusted = ProxySettings.parse("10.0.0.0/24")
    headers = {"x-forwarded-email": APPROVER}
    assert proxy_identity(headers, "10.0.0.7", trusted) == Identity(APPROVER, "proxy")
    assert proxy_identity({}, "10.0.0.7", trusted) is None
    with pytest.raises(IdentityRefused) as exc:
        proxy_identity(headers, "192.168.1.5", trusted)
    assert str(exc.value) == (
        "refused by rule untrusted-proxy: identity header X-Forwarded-Email came from "
        "192.168.1.5, which is not a trusted proxy (MLPLAT_TRUSTED_PROXIES)"
    )
    with pytest.raises(IdentityRefused, match="header X-Forwarded-Email is reserved"):
        proxy_identity({"X-Forwarded-Email": "mlplat/reconciler"}, "10.0.0.7", trusted)


def test_bad_trusted_proxy_config_names_the_variable(monkeypatch):
    monkeypatch.setenv("MLPLAT_TRUSTED_PROXIES", "10.0.0.0/24, not-an-address")
    with pytest.raises(IdentityRefused, match="MLPLAT_TRUSTED_PROXIES: 'not-an-address' does not"):
        ProxySettings.from_env()


def test_outside_local_a_job_run_needs_the_gateways_signed_launch_tags(monkeypatch):
    monkeypatch.setenv("MLPLAT_ENV", "k8s")
    config = {"ops": {"roll_back": {"config": {"registered_model": MODEL, "reason": "x"}}}}
    bare = {"mlplat/launched_by": APPROVER}
    with pytest.raises(IdentityRefused) as exc:
        job_identity(KEYS, bare, "rollback_model", config, "")
    assert str(exc.value).startswith(
        "refused by rule unverified-identity: this run has no verified launcher"
    )
    with pytest.raises(IdentityRefused, match="with MLPLAT_ENV=k8s acting_as and bare run tags"):
        job_identity(KEYS, {}, "rollback_model", config, APPROVER)
    tags = launch_tags(KEYS, Identity(APPROVER, "proxy"), "rollback_model", config)
    assert job_identity(KEYS, tags, "rollback_model", config, "") == Identity(APPROVER, "proxy")
    # Copied onto another launch (other config, other job, other name), the proof fails.
    other = {"ops": {"roll_back": {"config": {"registered_model": MODEL, "reason": "y"}}}}
    for job, cfg, t in [
        ("rollback_model", other, tags),
        ("promote_model", config, tags),
        ("rollback_model", config, {**tags, "mlplat/launched_by": APPROVER2}),
    ]:
        with pytest.raises(IdentityRefused, match="unverified-identity"):
            job_identity(KEYS, t, job, cfg, "")
    with pytest.raises(IdentityRefused, match="identity-mismatch: acting_as says"):
        job_identity(KEYS, tags, "rollback_model", config, APPROVER2)


def test_a_reexecution_does_not_inherit_its_parents_launcher(monkeypatch):
    """Dagster copies a parent run's tags onto its re-execution; the launch proof they carry
    binds the parent's job and config, never a run with a parent: someone who re-executes a
    promotion cannot act as the approver who launched it."""
    monkeypatch.setenv("MLPLAT_ENV", "k8s")
    config = {"ops": {"promote": {"config": {"registered_model": MODEL, "version": 3}}}}
    tags = launch_tags(KEYS, Identity(APPROVER, "proxy"), "promote_model", config)
    assert job_identity(KEYS, tags, "promote_model", config, "") == Identity(APPROVER, "proxy")
    with pytest.raises(IdentityRefused) as exc:
        job_identity(KEYS, tags, "promote_model", config, "", parent_run_id="run-a")
    assert str(exc.value).startswith(
        "refused by rule unverified-identity: this run has no verified launcher"
    )
    assert run_launcher(KEYS, tags, "promote_model", config, "run-a") is None
    # Signed for the re-execution by the gateway, it is the re-executor's.
    again = launch_tags(KEYS, Identity(APPROVER2, "proxy"), "", {}, "run-a")
    assert run_launcher(KEYS, again, "promote_model", config, "run-a") == Identity(
        APPROVER2, "proxy"
    )


def test_a_reexecution_never_acts_as_the_promotion_sensor():
    """A re-execution of the sensor's run carries its config, sensor proof included."""
    proof = sensor_proof(KEYS, MODEL, 3)
    assert job_identity(KEYS, {}, "promote_model", {}, "", proof, MODEL, 3) == SENSOR
    child = {"dagster/parent_run_id": "run-s"}
    with pytest.raises(IdentityRefused) as exc:
        job_identity(KEYS, child, "promote_model", {}, "", proof, MODEL, 3)
    assert str(exc.value) == (
        "refused by rule reserved-identity: this run re-executes run run-s, which the promotion "
        "sensor launched; only the sensor acts as the sensor, in runs it launches itself"
    )


def test_a_retry_nobody_signed_stays_its_launchers_work(monkeypatch):
    """The daemon's retry copies the launch it repeats: for the four-eyes rule it is still the
    original launcher's training, so they cannot approve it; a signed re-execution is the
    re-executor's."""
    monkeypatch.setenv("MLPLAT_ENV", "services")
    config = {"ops": {"train": {"config": {}}}}
    tags = launch_tags(KEYS, Identity(APPROVER, "proxy"), "payments_pipeline", config)
    retry = {**tags, "dagster/parent_run_id": "run-a", "dagster/retry_number": "1"}
    assert trained_by(KEYS, retry, "payments_pipeline", config, "run-a") == Identity(
        APPROVER, "proxy"
    )
    signed = {**retry, **launch_tags(KEYS, Identity(APPROVER2, "proxy"), "", {}, "run-a")}
    assert trained_by(KEYS, signed, "payments_pipeline", config, "run-a") == Identity(
        APPROVER2, "proxy"
    )
    assert trained_by(KEYS, {}, "payments_pipeline", config, "run-a") is None  # automation
