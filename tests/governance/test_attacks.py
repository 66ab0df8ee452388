"""The attacks of issue #12, each tried as a tenant engineer would and refused or detected.

(The audit-trail attacks are in test_audit_chain.py and test_cli.py, the sensor's bad events and
the job config's `acting_as` in test_sensor_and_jobs.py, the drifted alias in predictions in
tests/monitoring/test_batch_scores.py, identity sources in test_identity.py.)
"""

from __future__ import annotations

import copy
import json

import dagster as dg
import mlflow
import pytest
from typer.testing import CliRunner

from platform_assets.cli import governance as cli
from platform_assets.governance import service
from platform_assets.governance.effects import MoveFailed
from platform_assets.governance.rbac import Refused
from tests.governance.conftest import APPROVER, APPROVER2, MODEL, SENSOR, report_checks

runner = CliRunner()


def aliases(sb) -> dict[str, int]:
    return {a: int(v) for a, v in sb.mlflow.client().get_registered_model(MODEL).aliases.items()}


def test_mlplat_user_outside_local_is_refused_and_unverified_locally(gov_sandbox, monkeypatch):
    """`MLPLAT_USER=raj mlplat approve ...` run by rita made her model champion as raj."""
    sb = gov_sandbox
    monkeypatch.setattr(service, "deployment_governance", sb.governance)
    v1 = sb.register(0.30, launched_by=APPROVER)  # "rita" trained it
    sb.governance().propose(MODEL, v1, SENSOR)
    monkeypatch.setenv("MLPLAT_ENV", "services")
    result = runner.invoke(cli.app, ["approve", MODEL, str(v1)], env={"MLPLAT_USER": APPROVER2})
    assert result.exit_code == 2
    assert (
        "error: refused by rule unverified-identity: --as/MLPLAT_USER (pat@payments.example) is "
        "accepted only with MLPLAT_ENV=local; with MLPLAT_ENV=services pass an OIDC ID token"
    ) in " ".join(result.output.split())
    assert sb.governance().champion(MODEL) is None
    # Locally the claim is accepted but recorded as what it is.
    monkeypatch.setenv("MLPLAT_ENV", "local")
    result = runner.invoke(cli.app, ["approve", MODEL, str(v1)], env={"MLPLAT_USER": APPROVER2})
    assert result.exit_code == 0, result.output
    assert "identity pat@payments.example is unverified (--as/MLPLAT_USER, local only)" in (
        result.output
    )
    approval = [r for r in sb.store.records() if r.action == "approve"][-1]
    assert (approval.actor, approval.identity) == (APPROVER2, "unverified")


def test_mlflow_tags_are_not_evidence_of_metrics(gov_sandbox):
    """Rita set `eval_roc_auc=0.99` (and average precision) on a weak version's MLflow tags."""
    sb, gov = gov_sandbox, gov_sandbox.governance()
    weak = sb.register(0.05, roc_auc=0.55, launched_by=APPROVER)
    client = sb.mlflow.client()
    for tag in ("eval_roc_auc", "eval_average_precision"):
        client.set_model_version_tag(MODEL, str(weak), tag, "0.99")
    with pytest.raises(Refused) as exc:
        gov.propose(MODEL, weak, APPROVER)
    assert str(exc.value) == (
        f"refused by rule promotion-policy: {MODEL} v{weak}: fails thresholds: roc_auc 0.5500 "
        "< 0.7, average_precision 0.0500 < 0.12"
    )
    assert sb.store.records()[-1].evidence["metrics"] == {
        "average_precision": 0.05,
        "roc_auc": 0.55,
    }


def test_mlflow_tags_are_not_evidence_of_who_launched_training(gov_sandbox):
    """Rita set `mlplat/launched_by=raj` on her own version, then approved it herself."""
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30, launched_by=APPROVER)
    sb.mlflow.client().set_model_version_tag(MODEL, str(v1), "mlplat/launched_by", APPROVER2)
    gov.propose(MODEL, v1, SENSOR)
    with pytest.raises(Refused) as exc:
        gov.approve(MODEL, v1, APPROVER)
    assert str(exc.value) == (
        f"refused by rule four-eyes: {APPROVER} launched the training run of {MODEL} v{v1} and "
        "may not approve it"
    )
    assert gov.champion(MODEL) is None


def test_a_check_result_reported_by_hand_does_not_count(gov_sandbox):
    """Reporting a passing `leakage` check (the UI's report-event action, the GraphQL mutation)
    after a failing one flipped the model's required checks to passing."""
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30, checks={"leakage": False})
    report_checks(sb.instance, passed=True)  # runless: outside the run that built the set
    leakage_key = dg.AssetCheckKey(
        dg.AssetKey(["payments", "training_sets", "fraud_detector"]), "leakage"
    )
    latest = sb.instance.event_log_storage.get_latest_asset_check_execution_by_key([leakage_key])
    assert latest[leakage_key].evaluation.passed  # the hand-made one is the latest
    with pytest.raises(Refused) as exc:
        gov.propose(MODEL, v1, SENSOR)
    assert str(exc.value) == (
        f"refused by rule promotion-policy: {MODEL} v{v1}: required checks not passed: "
        "payments/training_sets/fraud_detector:leakage"
    )
    checks = sb.store.records()[-1].evidence["checks"]
    leakage = checks["payments/training_sets/fraud_detector:leakage"]
    assert leakage["passed"] is False and leakage["run_id"] == sb.last_run_id


def test_a_failing_deployment_manifest_refuses_the_approval_and_changes_nothing(
    gov_sandbox, monkeypatch
):
    """An approval whose deployment failed (`memory_gib: 1e308`) left MLflow's aliases moved,
    the database unchanged and the request pending, with no audit record."""
    from platform_assets.governance import deploy

    # Team YAML can no longer ask for 1e308 GiB and the platform's caps would cut it anyway
    # (tests/tenancy); skip the caps so the manifest itself is the invalid thing.
    monkeypatch.setattr(deploy, "effective_resources", lambda tenant, requested: requested)
    sb = gov_sandbox
    catalogs = {k: copy.copy(v) for k, v in sb.catalogs.items()}
    pay = catalogs["payments"]
    pay.tenant = pay.tenant.model_copy(
        update={"resources": pay.tenant.resources.model_copy(update={"memory_gib": 1e308})}
    )
    gov = sb.governance(catalogs)
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    before = (aliases(sb), sb.store.pending(), len(sb.store.records()))
    with pytest.raises(Refused) as exc:
        gov.approve(MODEL, v1, APPROVER)
    assert str(exc.value).startswith(
        f"refused by rule deployment-manifest: {MODEL} v{v1} cannot be deployed: "
        "InferenceService invalid at spec.predictor.model.resources.limits.memory: '1e+308Gi'"
    )
    assert (aliases(sb), sb.store.pending()) == before[:2]
    assert gov.champion(MODEL) is None
    records = sb.store.records()
    assert len(records) == before[2] + 1
    assert (records[-1].action, records[-1].outcome) == ("approve", "refused")
    assert records[-1].evidence["rule"] == "deployment-manifest"
    assert not (sb.deploy_dir / "payments" / "fraud_detector.yaml").exists()
    assert sb.store.verify().first is None


def test_an_mlflow_failure_after_commit_puts_aliases_and_state_back(gov_sandbox, monkeypatch):
    """Aliases move only after the database commit; if MLflow fails midway, they are put back,
    the state rows restored and the failure recorded."""
    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1, v2 = sb.register(0.30), sb.register(0.40)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    gov.propose(MODEL, v2, SENSOR)
    before = (aliases(sb), sb.store.pending(), gov.champion(MODEL))
    assert before[0] == {"champion": v1, "challenger": v2}
    real = mlflow.MlflowClient.set_registered_model_alias

    def flaky(self, name, alias, version):
        if alias == "previous":
            raise ConnectionError("MLflow went away")
        return real(self, name, alias, version)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", flaky)
    with pytest.raises(MoveFailed) as exc:
        gov.approve(MODEL, v2, APPROVER2)
    monkeypatch.undo()
    assert str(exc.value) == (
        f"{MODEL}: approve undone: MLflow could not mirror it (MLflow went away); aliases and "
        "state are as they were"
    )
    assert (aliases(sb), sb.store.pending(), gov.champion(MODEL)) == before
    last = sb.store.records()[-1]
    assert (last.action, last.outcome) == ("approve", "failed")
    assert "aliases put back and state restored" in last.reason
    assert sb.store.verify().first is None
    # Nothing is left half-done: the same approval succeeds once MLflow is back.
    assert gov.approve(MODEL, v2, APPROVER2).champion == v2
    assert aliases(sb) == {"champion": v2, "previous": v1}


def test_a_drifted_champion_alias_is_flagged_in_the_audit_and_the_check(gov_sandbox):
    """Pointing MLflow's `champion` alias at a merely pending version went unnoticed."""
    from platform_assets.governance.reconcile import CHECK, reconcile

    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1, v2 = sb.register(0.30), sb.register(0.40)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    gov.propose(MODEL, v2, SENSOR)  # pending
    sb.mlflow.client().set_registered_model_alias(MODEL, "champion", str(v2))
    reported: list = []
    seen, lines = reconcile(gov, sb.mlflow, {}, reported.append)
    message = (
        f"MLflow alias {MODEL}@champion points at v{v2} but the platform's champion is v{v1}; "
        "scoring and serving use the platform's"
    )
    assert lines == [f"{MODEL}: {message}"]
    last = sb.store.records()[-1]
    assert (last.actor, last.identity, last.action, last.outcome, last.reason) == (
        "mlplat/reconciler",
        "platform",
        "reconcile",
        "drift",
        message,
    )
    (evaluation,) = reported
    assert (evaluation.check_name, evaluation.passed) == (CHECK, False)
    assert evaluation.asset_key == dg.AssetKey(["payments", "models", "fraud_detector"])
    # The same drift is not recorded twice; its repair is.
    assert reconcile(gov, sb.mlflow, seen, reported.append) == (seen, [])
    sb.mlflow.client().set_registered_model_alias(MODEL, "champion", str(v1))
    seen, lines = reconcile(gov, sb.mlflow, seen, reported.append)
    assert seen == {} and sb.store.records()[-1].outcome == "resolved"
    assert json.dumps(seen) == "{}"


@pytest.mark.materialize
def test_the_champion_alias_check_fails_on_drift(gov_sandbox):
    from platform_assets.governance.reconcile import alias_check

    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1, v2 = sb.register(0.30), sb.register(0.40)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    check = alias_check(sb.catalogs["payments"].tenant, "fraud_detector")
    spec = dg.AssetSpec(dg.AssetKey(["payments", "models", "fraud_detector"]))

    def run():
        result = dg.materialize(
            [spec, check],
            resources={"mlflow": sb.mlflow},
            instance=sb.instance,
            selection=dg.AssetSelection.checks(check),
        )
        return result.get_asset_check_evaluations()[0]

    assert run().passed
    sb.mlflow.client().set_registered_model_alias(MODEL, "champion", str(v2))
    failed = run()
    assert not failed.passed
    assert failed.description.startswith(f"MLflow alias {MODEL}@champion points at v{v2}")
