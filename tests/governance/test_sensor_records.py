"""What the promotion sensor records on each evaluation report (`promotion/outcome`, `promotion/
reason`), once per evaluation event; what it leaves before its cursor instead (a tenant folder
that does not load, a model its YAML does not hold yet, an unreachable store, the tick budget);
and models added to the tenants' YAML after the sensor's process read it."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.governance import sensors
from platform_assets.governance.sensors import EVENT, OUTCOME, PROOF, REASON, candidates
from platform_assets.tenancy.catalog import defs_root
from tests.governance.conftest import (
    APPROVER,
    MODEL,
    REPORT,
    judgements,
    sensor_context,
    tick,
)


def report_key(name: str) -> dg.AssetKey:
    tenant, _, model = name.partition(".")
    return dg.AssetKey([tenant, "evaluation_reports", model])


def last_event(sb, key: dg.AssetKey = REPORT) -> int:
    return sb.instance.fetch_materializations(key, limit=1).records[0].storage_id


@pytest.fixture
def tenants(tmp_path, monkeypatch) -> Path:
    """A copy of the demo tenants' folders that the test edits, as the sensor's defs root."""
    root = tmp_path / "defs"
    shutil.copytree(defs_root(), root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    return root


def add_model(root: Path, tenant: str, name: str, like: str) -> Path:
    """A new model's YAML in an existing tenant, copied from one of its models."""
    source = root / tenant / "models" / like / "defs.yaml"
    target = root / tenant / "models" / name / "defs.yaml"
    target.parent.mkdir()
    target.write_text(source.read_text().replace(f"name: {like}", f"name: {name}"))
    return target


def test_proposed_and_not_proposed_versions_are_recorded_with_their_reason(gov_sandbox, defs):
    sb = gov_sandbox
    v1 = sb.register(0.30)
    first = last_event(sb)
    requests, cursor = tick(sb, defs, None)
    assert [r.run_key for r in requests] == [f"promote:{MODEL}:{v1}"]
    assert judgements(sb.instance) == [
        (first, "proposed", "first version to meet policy (average_precision=0.3000)")
    ]
    promote = defs.get_job_def("promote_model").execute_in_process(
        run_config=requests[0].run_config, instance=sb.instance, tags=requests[0].tags
    )
    assert promote.success
    sb.governance().approve(MODEL, v1, APPROVER)

    v2 = sb.register(0.30)  # a retrain on unchanged data: the same score
    second = last_event(sb)
    skipped, _ = tick(sb, defs, cursor)
    reason = "average_precision=0.3000 does not beat champion v1 (0.3000) by more than 0.002"
    assert skipped.skip_message == f"{MODEL} v{v2}: {reason}"
    assert judgements(sb.instance)[1:] == [(second, "not_proposed", reason)]
    (observation,) = [
        r.asset_observation
        for r in sb.instance.fetch_observations(REPORT, limit=10).records
        if r.asset_observation.metadata[EVENT].value == second
    ]
    assert observation.metadata["promotion/model_version"].value == v2
    assert observation.description == (f"promotion sensor, event {second}: not_proposed: {reason}")


def test_versions_superseded_in_a_tick_are_recorded(gov_sandbox, defs):
    sb = gov_sandbox
    v1 = sb.register(0.30)
    first = last_event(sb)
    v2 = sb.register(0.40)
    second = last_event(sb)
    requests, _ = tick(sb, defs, None)
    assert [r.run_key for r in requests] == [f"promote:{MODEL}:{v2}"]
    assert sorted(judgements(sb.instance)) == [
        (first, "not_proposed", f"superseded by v{v2} in this tick"),
        (second, "proposed", "first version to meet policy (average_precision=0.4000)"),
    ]
    assert v1 < v2


def test_evaluations_that_can_never_be_judged_are_recorded_as_not_judged(gov_sandbox, defs):
    sb = gov_sandbox
    sb.instance.report_runless_asset_event(
        dg.AssetMaterialization(REPORT, metadata={"registered_model": MODEL})
    )
    runless = last_event(sb)
    sb.register(0.30, artifact=False)  # the model step recorded no artifact hash
    unhashed = last_event(sb)
    model_event = sb.instance.fetch_materializations(
        dg.AssetKey(["payments", "models", "fraud_detector"]), limit=1
    ).records[0]
    result, cursor = tick(sb, defs, None)
    assert judgements(sb.instance) == [
        (runless, "not_judged", "reported outside a run; not evidence"),
        (
            unhashed,
            "not_judged",
            f"no evidence: model event {model_event.storage_id} has no artifact_sha256 metadata",
        ),
    ]
    again, _ = tick(sb, defs, cursor)
    assert again.skip_message == "no new evaluation reports"
    assert result.skip_message.startswith("payments/evaluation_reports/fraud_detector event")


def test_a_model_added_after_the_sensor_read_its_tenant_is_proposed(gov_sandbox, defs, tenants):
    """The reported bug: a model added to a running deployment was 'no model ...' for the
    promotion sensor, whose process had read the tenants' YAML once."""
    sb = gov_sandbox
    v1 = sb.register(0.30)
    first, cursor = tick(sb, defs, None)  # the sensor's process has read payments' folder
    assert [r.run_key for r in first] == [f"promote:{MODEL}:{v1}"]
    add_model(tenants, "payments", "fraud_guard", like="fraud_detector")
    version = sb.register(0.30, name="payments.fraud_guard")
    requests, _ = tick(sb, defs, cursor)
    assert [r.run_key for r in requests] == [f"promote:payments.fraud_guard:{version}"]
    key = report_key("payments.fraud_guard")
    assert judgements(sb.instance, key) == [
        (last_event(sb, key), "proposed", "first version to meet policy (average_precision=0.3000)")
    ]


def test_a_model_in_no_tenants_yaml_waits_then_is_recorded_as_not_judged(
    gov_sandbox, defs, monkeypatch
):
    sb = gov_sandbox
    version = sb.register(0.30, name="payments.ghost")
    key = report_key("payments.ghost")
    waiting = (
        f"payments.ghost v{version}: not in tenant 'payments''s YAML yet; read again each "
        "tick until 300 s after its evaluation"
    )
    held, cursor = tick(sb, defs, None)
    assert held.skip_message == waiting
    again, cursor = tick(sb, defs, cursor)  # the cursor stayed before it: read again
    assert again.skip_message == waiting
    assert judgements(sb.instance, key) == []

    monkeypatch.setattr(sensors, "UNKNOWN_MODEL_GRACE_S", 0.0)  # its time is up
    judged, cursor = tick(sb, defs, cursor)
    reason = "no model 'ghost' in tenant 'payments''s YAML as it is now"
    assert judged.skip_message == f"payments.ghost v{version}: {reason}"
    assert judgements(sb.instance, key) == [(last_event(sb, key), "not_judged", reason)]
    done, _ = tick(sb, defs, cursor)
    assert done.skip_message == "no new evaluation reports"


def test_a_tenant_folder_that_does_not_load_holds_only_its_own_evaluations(
    gov_sandbox, defs, tenants
):
    sb = gov_sandbox
    bad = tenants / "ridehail" / "models" / "driver_churn" / "defs.yaml"
    good = bad.read_text()
    bad.write_text(good.replace("algorithm:", "algorithmz:"))
    held_version = sb.register(0.30, name="ridehail.driver_churn")
    v1 = sb.register(0.30)
    requests, cursor = tick(sb, defs, None)
    assert [r.run_key for r in requests] == [f"promote:{MODEL}:{v1}"]  # payments goes on
    held, cursor = tick(sb, defs, cursor)
    assert held.skip_message == (
        f"ridehail.driver_churn v{held_version}: waits for tenant 'ridehail''s folder to load "
        f"({bad.resolve()}: attributes.algorithmz: Extra inputs are not permitted)"
    )
    ridehail = report_key("ridehail.driver_churn")
    assert judgements(sb.instance, ridehail) == []

    bad.write_text(good)  # fixed: judged at the next tick, with whatever its evidence says
    tick(sb, defs, cursor)
    assert [j[0] for j in judgements(sb.instance, ridehail)] == [last_event(sb, ridehail)]


def test_a_retried_tick_records_nothing_twice_and_a_forged_record_does_not_count(gov_sandbox, defs):
    sb = gov_sandbox
    sb.register(0.30, checks={"leakage": False})
    first = last_event(sb)
    tick(sb, defs, None)
    # The daemon stopped after recording, before saving the cursor: the tick runs again.
    tick(sb, defs, None)
    assert [j[:2] for j in judgements(sb.instance)] == [(first, "not_proposed")]

    # Anyone may report an observation on the asset; one the sensor did not sign is not its
    # record, and does not stop the sensor writing its own.
    sb.register(0.30, checks={"leakage": False})
    second = last_event(sb)
    sb.instance.report_runless_asset_event(
        dg.AssetObservation(
            REPORT,
            metadata={EVENT: second, OUTCOME: "proposed", REASON: "forged", PROOF: "0" * 64},
        )
    )
    tick(sb, defs, None)
    reason = "required checks not passed: payments/training_sets/fraud_detector:leakage"
    assert judgements(sb.instance)[1:] == [
        (second, "proposed", "forged"),
        (second, "not_proposed", reason),
    ]


def test_an_unreachable_governance_store_fails_the_tick_and_moves_no_cursor(
    gov_sandbox, defs, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    sb = gov_sandbox
    sb.register(0.30)
    monkeypatch.setenv("MLPLAT_DB_URL", "postgresql://postgres@127.0.0.1:9/platform")
    with sensor_context(sb, defs, None) as context:
        with pytest.raises(OperationalError, match="127.0.0.1"):
            sensors.promotion_sensor(context)
        assert context.cursor is None
    assert judgements(sb.instance) == []


def test_models_past_the_tick_budget_keep_their_cursor(gov_sandbox):
    sb = gov_sandbox
    sb.register(0.30)
    gov = sb.governance()
    found = candidates(gov, sb.instance, [REPORT], {}, budget_s=-1.0)
    assert found.cursor == {}
    assert found.judgements == [] and found.requests == []
    assert found.lines == ["1 models with new evaluations wait for the next tick"]
