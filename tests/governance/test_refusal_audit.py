"""Callers refused because their identity could not be established are audited: each refusal
path says why and leaves a record in the audit trail, whose actor is `unidentified` and whose
evidence holds what the caller claimed to be (never believed)."""

from __future__ import annotations

import time

import jwt
import pytest
from typer.testing import CliRunner

from platform_assets.cli import governance as cli
from platform_assets.governance.audit import PLATFORM_AUDIT_KEY, UNIDENTIFIED
from platform_assets.governance.demo_idp import LocalIdP
from platform_assets.governance.heads import published_heads
from tests.governance.conftest import APPROVER, MODEL, SENSOR

runner = CliRunner()
MODEL_KEY = ["payments", "models", "fraud_detector"]


@pytest.fixture
def sb(cli_sandbox):
    return cli_sandbox


def forged(idp: LocalIdP, tmp_path) -> str:
    """Signed by another key under the IdP's key id."""
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": idp.audience, "email": APPROVER, "iat": now}
    other = LocalIdP(tmp_path / "forger")
    return jwt.encode({**claims, "exp": now + 60}, other._key, "ES256", {"kid": idp.kid})


def refusal(sb, chain: str = "payments"):
    records = [r for r in sb.store.records(tenant=chain) if r.outcome == "refused"]
    assert len(records) == 1, records
    return records[0]


def approve(*extra: str, env: dict | None = None, model: str = MODEL):
    result = runner.invoke(cli.app, ["approve", model, "1", *extra], env=env)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (forged, "Signature verification failed"),
        (lambda idp, _: idp.issue(APPROVER, iss="https://evil.example"), "Invalid issuer"),
        (lambda idp, _: idp.issue(APPROVER, aud="other-app"), "Audience doesn't match"),
        (lambda idp, _: idp.issue(APPROVER, ttl=-120), "Signature has expired"),
    ],
    ids=["bad-signature", "wrong-issuer", "wrong-audience", "expired"],
)
def test_a_token_failing_verification_is_refused_and_audited(sb, idp, tmp_path, token, message):
    output = approve("--token", token(idp, tmp_path))
    assert f"error: refused by rule invalid-token: ID token rejected: {message}" in output
    record = refusal(sb)
    assert (record.actor, record.identity, record.action) == (UNIDENTIFIED, "refused", "approve")
    assert record.reason.startswith(f"refused by rule invalid-token: ID token rejected: {message}")
    assert record.evidence["claimed"] == f"token={APPROVER}"  # the claim, as a claim
    assert record.evidence | {"claimed": ""} == {
        "rule": "invalid-token",
        "via": "cli",
        "claimed": "",
        "model": MODEL,
    }
    assert (record.model, record.version, record.state) == ("", 1, {})


def test_a_reserved_identity_in_a_token_is_refused_and_audited(sb, idp):
    output = approve("--token", idp.issue("mlplat/promotion_sensor"))
    assert (
        "error: refused by rule reserved-identity: 'mlplat/promotion_sensor' in the ID token is "
        "reserved for the platform's own sensors" in output
    )
    record = refusal(sb)
    assert record.actor == UNIDENTIFIED and record.evidence["rule"] == "reserved-identity"
    assert record.evidence["claimed"] == "token=mlplat/promotion_sensor"


def test_a_reserved_identity_in_as_is_refused_and_audited(sb):
    output = approve("--as", "mlplat/promotion_sensor")
    assert "error: refused by rule reserved-identity: 'mlplat/promotion_sensor' in " in output
    record = refusal(sb)
    assert record.actor == UNIDENTIFIED
    assert record.evidence["claimed"] == "as=mlplat/promotion_sensor"


@pytest.mark.parametrize("how", ["--as", "MLPLAT_USER"])
def test_a_self_asserted_identity_outside_local_is_refused_and_audited(sb, monkeypatch, how):
    monkeypatch.setenv("MLPLAT_ENV", "services")
    monkeypatch.setenv("MLPLAT_AUDIT_KEY", "refusal audit test key 0123456789")
    if how == "--as":
        output = approve("--as", APPROVER)
    else:
        output = approve(env={"MLPLAT_USER": APPROVER})
    assert (
        f"error: refused by rule unverified-identity: --as/MLPLAT_USER ({APPROVER}) is accepted "
        "only with MLPLAT_ENV=local" in output
    )
    record = refusal(sb)
    assert (record.actor, record.identity) == (UNIDENTIFIED, "refused")
    assert record.evidence["claimed"] == f"as={APPROVER}"
    assert record.evidence["rule"] == "unverified-identity"


def test_a_refusal_naming_no_known_model_goes_to_the_platform_chain(sb, idp):
    output = approve("--token", idp.issue(APPROVER, ttl=-120), model="nosuch.model")
    assert "error: refused by rule invalid-token" in output
    record = refusal(sb, "platform")
    assert record.evidence["model"] == "nosuch.model" and record.actor == UNIDENTIFIED
    assert sb.store.records(tenant="payments") == []
    # Its head is published like any chain's, and the chain verifies against it.
    assert sb.observations[-1].asset_key == PLATFORM_AUDIT_KEY
    heads = published_heads(sb.instance, [PLATFORM_AUDIT_KEY], None)
    assert [(h.tenant, h.seq, h.hash) for h in heads] == [("platform", 1, record.hash)]
    assert sb.store.verify(heads).problems == []


def test_no_identity_at_all_is_refused_without_a_record(sb):
    result = runner.invoke(cli.app, ["approve", MODEL, "1"])
    assert result.exit_code == 2 and "no identity: pass an ID token" in result.output
    assert sb.store.records() == []


def test_a_refusal_publishes_the_head_on_the_model_and_keeps_its_state_covered(sb):
    v1 = sb.register(0.30)
    sb.governance().propose(MODEL, v1, SENSOR)
    approve("--as", "mlplat/promotion_sensor")
    record = refusal(sb)
    assert sb.observations[-1].asset_key.path == MODEL_KEY
    assert sb.observations[-1].metadata["audit_seq"].value == record.seq
    # The refusal covers no state: the model's newest state record is still the proposal's, so
    # the next action and `verify` see the state as the platform left it.
    assert sb.store.verify(published_heads(sb.instance, [], None)).problems == []
    assert sb.governance().approve(MODEL, v1, APPROVER).champion == v1
