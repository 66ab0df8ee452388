"""The promotion workflow end to end on real MLflow: challenger, approvals, champion, rollback."""

from __future__ import annotations

import pytest
import yaml

from platform_assets.governance.identity import SENSOR_IDENTITY
from platform_assets.governance.rbac import Refused
from tests.governance.conftest import (
    ADMIN,
    APPROVER,
    APPROVER2,
    LAUNCHER,
    MODEL,
    OTHER_TENANT,
    PLATFORM_ADMIN,
    SENSOR,
    VIEWER,
)


def aliases(sb) -> dict[str, int]:
    model = sb.mlflow.client().get_registered_model(MODEL)
    return {alias: int(v) for alias, v in model.aliases.items()}


def actions(sb) -> list[tuple[str, str, str, int | None]]:
    return [(r.actor, r.action, r.outcome, r.version) for r in sb.store.records()]


def test_candidate_becomes_challenger_pending_then_champion_on_approval(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    out = gov.propose(MODEL, v1, SENSOR)
    assert "awaits 1 production approval(s) from approver" in out.message
    assert aliases(sb) == {"challenger": v1}
    assert [r["environment"] for r in sb.store.pending()] == ["production"]
    assert gov.champion(MODEL) is None

    out = gov.approve(MODEL, v1, APPROVER, "looks good")
    assert out.champion == v1
    assert aliases(sb) == {"champion": v1}
    assert sb.store.pending() == []
    assert actions(sb) == [
        (SENSOR_IDENTITY, "propose", "accepted", v1),
        (SENSOR_IDENTITY, "challenger", "aliased", v1),
        (SENSOR_IDENTITY, "request_approval", "pending", v1),
        (APPROVER, "approve", "approved", v1),
        (APPROVER, "promote", "champion", v1),
    ]
    evidence = sb.store.records()[0].evidence
    assert evidence["metrics"]["average_precision"] == 0.3
    assert evidence["dagster_run_id"] == sb.last_run_id
    assert evidence["launched_by"] == LAUNCHER
    assert evidence["launched_by_identity"] == "unverified"  # a bare run tag, locally
    assert all(c["passed"] for c in evidence["checks"].values())
    assert len(evidence["checks"]) == 4
    # The artifact hash the model step recorded is the champion's, for every loader to verify.
    assert evidence["artifact_sha256"] == sb.artifacts[v1]
    assert sb.store.champion_artifacts() == {MODEL: (v1, sb.artifacts[v1])}
    # The promotion is also an observation on the model asset, for the UI's history.
    events = [o.metadata["event"].value for o in sb.observations]
    assert events[-1] == "promote:champion"
    assert sb.observations[-1].asset_key.path == ["payments", "models", "fraud_detector"]


def test_better_version_replaces_champion_and_previous_keeps_alias(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    v2 = sb.register(0.35)
    gov.propose(MODEL, v2, SENSOR)
    assert aliases(sb) == {"champion": v1, "challenger": v2}
    gov.approve(MODEL, v2, APPROVER2)
    assert aliases(sb) == {"champion": v2, "previous": v1}
    manifest = yaml.safe_load((sb.deploy_dir / "payments" / "fraud_detector.yaml").read_text())
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["annotations"]["mlplat/model-version"] == str(v2)


def test_worse_or_not_better_enough_version_is_not_promoted_and_records_why(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    v2 = sb.register(0.301)  # min_improvement is 0.002
    with pytest.raises(Refused, match="does not beat champion v1 .* by more than 0.002"):
        gov.propose(MODEL, v2, SENSOR)
    last = sb.store.records()[-1]
    assert (last.action, last.outcome, last.version) == ("propose", "refused", v2)
    assert last.evidence["rule"] == "promotion-policy"
    assert last.evidence["metrics"]["average_precision"] == 0.301
    assert last.evidence["champion_before"] == v1
    assert aliases(sb) == {"champion": v1}


def test_failing_thresholds_or_checks_block_the_candidate(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    low = sb.register(0.05)  # threshold average_precision 0.12
    with pytest.raises(Refused, match=r"fails thresholds: average_precision 0.0500 < 0.12"):
        gov.propose(MODEL, low, SENSOR)
    ok = sb.register(0.30, checks={"leakage": False})
    with pytest.raises(
        Refused, match="required checks not passed: payments/training_sets/fraud_detector:leakage"
    ):
        gov.propose(MODEL, ok, SENSOR)


def test_a_version_without_a_recorded_artifact_hash_cannot_be_promoted(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    version = sb.register(0.30, artifact=False)
    with pytest.raises(
        Refused,
        match=rf"^refused by rule promotion-policy: {MODEL} v{version}: no evidence: "
        r"model event \d+ has no artifact_sha256 metadata$",
    ):
        gov.propose(MODEL, version, SENSOR)
    assert sb.store.champion_artifacts() == {}


def test_pending_until_all_approvals_and_staging_gate(gov_sandbox):
    sb = gov_sandbox
    gov = sb.governance(sb.with_policy(staging={"count": 1}, production={"count": 2}))
    v1 = sb.register(0.30)
    out = gov.propose(MODEL, v1, SENSOR)
    assert "awaits 1 staging approval(s)" in out.message
    assert aliases(sb) == {}
    gov.approve(MODEL, v1, APPROVER)
    assert aliases(sb) == {"challenger": v1}
    out = gov.approve(MODEL, v1, APPROVER)
    assert "1 of 2 production approvals" in out.message
    assert gov.champion(MODEL) is None
    with pytest.raises(Refused, match="one-approval-per-person"):
        gov.approve(MODEL, v1, APPROVER)
    gov.approve(MODEL, v1, APPROVER2)
    assert gov.champion(MODEL) == v1


@pytest.mark.parametrize(
    ("actor", "message"),
    [
        (
            VIEWER,
            "refused by rule role-required: vera@payments.example has role viewer in tenant "
            "payments; approve production for needs one of: approver",
        ),
        (
            "nobody@example.com",
            "refused by rule role-required: nobody@example.com has no role in tenant payments",
        ),
        (
            OTHER_TENANT,
            "refused by rule tenant-isolation: grace@growth.example belongs to tenant growth and "
            "may not approve production for a model of tenant payments",
        ),
        (
            LAUNCHER,
            "refused by rule role-required: lena@payments.example has no role",
        ),
    ],
)
def test_refusals_name_the_rule_and_are_recorded(gov_sandbox, actor, message):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    with pytest.raises(Refused) as exc:
        gov.approve(MODEL, v1, actor)
    assert str(exc.value).startswith(message)
    last = sb.store.records()[-1]
    assert (last.actor, last.action, last.outcome) == (actor, "approve", "refused")
    assert last.reason == str(exc.value)
    assert gov.champion(MODEL) is None
    assert sb.observations[-1].metadata["event"].value == "approve:refused"


def test_four_eyes_refuses_the_approver_who_launched_the_training_run(gov_sandbox):
    """The launching identity comes from the training run's Dagster run record."""
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30, launched_by=APPROVER)
    gov.propose(MODEL, v1, SENSOR)
    with pytest.raises(
        Refused, match=r"^refused by rule four-eyes: paul@payments.example launched"
    ):
        gov.approve(MODEL, v1, APPROVER)
    assert sb.store.records()[-1].evidence == {"rule": "four-eyes"}
    gov.approve(MODEL, v1, APPROVER2)
    assert gov.champion(MODEL) == v1


def test_platform_admin_may_approve_any_tenant(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, PLATFORM_ADMIN)
    assert sb.store.records()[-2].evidence["role"] == "platform_admin"


def test_reject_records_why_and_drops_challenger(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.reject(MODEL, v1, APPROVER, "calibration drifted on the holdout week")
    assert aliases(sb) == {}
    mv = sb.mlflow.client().get_model_version(MODEL, str(v1))
    assert mv.tags["mlplat.rejected_reason"] == "calibration drifted on the holdout week"
    assert sb.store.records()[-1].reason == "calibration drifted on the holdout week"
    with pytest.raises(Refused, match="no-pending-request"):
        gov.approve(MODEL, v1, APPROVER2)


def test_rollback_moves_champion_back_to_previous(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1, v2 = sb.register(0.30), sb.register(0.40)
    for v in (v1, v2):
        gov.propose(MODEL, v, SENSOR)
        gov.approve(MODEL, v, APPROVER)
    with pytest.raises(Refused, match="role-required: vera@payments.example has role viewer"):
        gov.rollback(MODEL, VIEWER, "oops")
    assert sb.store.champion_artifacts() == {MODEL: (v2, sb.artifacts[v2])}
    out = gov.rollback(MODEL, ADMIN, "v2 pages on-call: latency")
    assert out.champion == v1
    assert sb.artifacts[v1] != sb.artifacts[v2]
    assert sb.store.champion_artifacts() == {MODEL: (v1, sb.artifacts[v1])}
    assert aliases(sb) == {"champion": v1}
    with pytest.raises(Refused, match="no-previous-champion"):
        gov.rollback(MODEL, ADMIN, "again")
    manifest = yaml.safe_load((sb.deploy_dir / "payments" / "fraud_detector.yaml").read_text())
    assert manifest["metadata"]["annotations"]["mlplat/model-version"] == str(v1)


def test_proposing_twice_is_a_no_op(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    before = len(sb.store.records())
    out = gov.propose(MODEL, v1, SENSOR)
    assert "already proposed" in out.message
    assert len(sb.store.records()) == before


def test_people_without_an_operator_role_cannot_submit(gov_sandbox):
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    with pytest.raises(Refused, match="role-required: vera@payments.example has role viewer"):
        gov.propose(MODEL, v1, VIEWER)
    assert sb.store.verify().checked == 1 and sb.store.verify().first is None


def test_a_refusal_midway_undoes_the_action_and_keeps_only_the_refusal(gov_sandbox, monkeypatch):
    """If the champion moved under us (compare-and-set fails), the approval is not kept."""
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    before = len(sb.store.records())
    monkeypatch.setattr(sb.store, "set_champion", lambda *a, **k: False)
    with pytest.raises(Refused, match="concurrent-change: the champion of payments.fraud_detector"):
        gov.approve(MODEL, v1, APPROVER)
    records = sb.store.records()
    assert [(r.action, r.outcome) for r in records[before:]] == [("approve", "refused")]
    assert sb.store.pending()[0]["version"] == v1
    with sb.store.engine.connect() as conn:
        assert sb.store.approvers(conn, MODEL, v1, "production") == []
    assert sb.store.verify().first is None


def test_evidence_reads_the_sharded_sqlite_event_log(gov_sandbox, instance):
    """The default local instance: on-disk SQLite, each run's events in its own shard with ids
    unlike the asset index's, which input event pointers use."""
    from tests.governance.conftest import Sandbox

    sb = Sandbox(
        instance, gov_sandbox.mlflow, gov_sandbox.store, gov_sandbox.catalogs,
        gov_sandbox.deploy_dir, [],
    )  # fmt: skip
    gov = sb.governance()
    for _ in range(2):  # the second run's shard ids overlap the first run's index ids
        version = sb.register(0.30)
    out = gov.propose(MODEL, version, SENSOR)
    assert "awaits 1 production approval(s)" in out.message
    evidence = sb.store.records()[0].evidence
    assert evidence["training_set"]["run_id"] == sb.last_run_id
    assert all(c["passed"] and c["run_id"] == sb.last_run_id for c in evidence["checks"].values())
