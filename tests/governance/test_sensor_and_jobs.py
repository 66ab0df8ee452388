"""The promotion sensor (cursor, run keys, SkipReason) and the promote/rollback jobs."""

from __future__ import annotations

import dagster as dg

from tests.governance.conftest import ADMIN, APPROVER, MODEL, REPORT, tick


def evaluated(sb, average_precision: float, **kw) -> int:
    """A version trained and evaluated by a real run: its evaluation report is what the sensor
    reads."""
    return sb.register(average_precision, **kw)


def run_request(sb, defs, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return defs.get_job_def("promote_model").execute_in_process(
        run_config=request.run_config, instance=sb.instance, tags=request.tags
    )


def test_sensor_submits_once_and_skips_with_reasons(gov_sandbox, defs):
    sb = gov_sandbox
    result, cursor0 = tick(sb, defs, None)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "no new evaluation reports"

    v1 = evaluated(sb, 0.30)
    requests, cursor1 = tick(sb, defs, cursor0)
    assert [r.run_key for r in requests] == [f"promote:{MODEL}:{v1}"]
    run = run_request(sb, defs, requests[0])
    assert run.success
    assert sb.store.pending()[0]["version"] == v1
    assert sb.store.records()[0].reason == "first version to meet policy (average_precision=0.3000)"
    observed = [
        e.asset_observation_data.asset_observation for e in run.get_asset_observation_events()
    ]
    assert [o.metadata["event"].value for o in observed] == [
        "propose:accepted",
        "challenger:aliased",
        "request_approval:pending",
    ]

    # Re-evaluating: nothing new after the cursor; from an old cursor, already submitted.
    again, cursor2 = tick(sb, defs, cursor1)
    assert again.skip_message == "no new evaluation reports" and cursor2 == cursor1
    replay, _ = tick(sb, defs, cursor0)
    assert replay.skip_message == f"{MODEL} v{v1}: already submitted"
    # A second run of the same request is a no-op, not a second promotion.
    before = len(sb.store.records())
    assert run_request(sb, defs, requests[0]).success
    assert len(sb.store.records()) == before

    sb.governance().approve(MODEL, v1, APPROVER)
    v2 = evaluated(sb, 0.301)
    worse, _ = tick(sb, defs, cursor2)
    assert worse.skip_message == (
        f"{MODEL} v{v2}: average_precision=0.3010 does not beat champion v{v1} (0.3000) "
        "by more than 0.002"
    )


def test_sensor_holds_back_versions_whose_checks_failed(gov_sandbox, defs):
    sb = gov_sandbox
    v1 = evaluated(sb, 0.30, checks={"card_activity": False})
    result, _ = tick(sb, defs, None)
    assert result.skip_message == (
        f"{MODEL} v{v1}: required checks not passed: payments/features/card_activity:expectations"
    )


def test_jobs_take_typed_config_and_record_the_launching_identity(gov_sandbox, defs):
    sb = gov_sandbox
    gov = sb.governance(sb.with_policy(production={"count": 0}))
    v1, v2 = sb.register(0.30), sb.register(0.40)
    gov.propose(MODEL, v1, APPROVER)
    promote = defs.get_job_def("promote_model").execute_in_process(
        run_config={
            "ops": {"submit_candidate": {"config": {"registered_model": MODEL, "version": v2}}}
        },
        instance=sb.instance,
        tags={"mlplat/launched_by": ADMIN},
        raise_on_error=False,
    )
    # The YAML policy (1 production approval) applies to jobs: pending, not champion.
    assert promote.success
    assert sb.store.records()[-1].actor == ADMIN
    assert sb.store.records()[-1].outcome == "pending"

    rollback = defs.get_job_def("rollback_model").execute_in_process(
        run_config={"ops": {"roll_back": {"config": {"registered_model": MODEL, "reason": "x"}}}},
        instance=sb.instance,
        tags={"mlplat/launched_by": "vera@payments.example"},
        raise_on_error=False,
    )
    assert not rollback.success
    failure = rollback.get_step_failure_events()[0].step_failure_data.error
    assert "refused by rule role-required: vera@payments.example has role viewer" in str(
        failure.cause or failure
    )
    assert sb.store.records()[-1].outcome == "refused"


def test_sensor_waits_while_the_tenant_is_over_budget(gov_sandbox, defs, monkeypatch, tmp_path):
    from platform_assets.cost import budget
    from platform_assets.tenancy.limits import limits_for
    from tests.cost.conftest import grant_override, record_step

    sb = gov_sandbox
    record_step(sb.instance, "payments", limits_for("payments").budget.monthly_usd + 1)
    v1 = evaluated(sb, 0.30)
    held, cursor = tick(sb, defs, None)
    message = budget.budget_status(sb.instance, "payments").message
    assert held.skip_message == message and "over budget" in message
    assert sb.store.records() == []
    # The version is not passed over: once the platform grants an override, it is submitted.
    again, _ = tick(sb, defs, cursor)
    assert again.skip_message == message
    grant_override(monkeypatch, tmp_path / "limits.yaml", "payments")
    requests, _ = tick(sb, defs, cursor)
    assert [r.run_key for r in requests] == [f"promote:{MODEL}:{v1}"]


def promote_run(sb, defs, config: dict, tags: dict | None = None):
    return defs.get_job_def("promote_model").execute_in_process(
        run_config={"ops": {"submit_candidate": {"config": config}}},
        instance=sb.instance,
        tags=tags or {},
        raise_on_error=False,
    )


def failure_of(result) -> str:
    error = result.get_step_failure_events()[0].step_failure_data.error
    return str(error.cause or error)


def test_job_config_cannot_claim_the_sensor_identity(gov_sandbox, defs):
    """Attack: `acting_as: mlplat/promotion_sensor` in the promote_model job's config."""
    sb = gov_sandbox
    v1 = sb.register(0.30)
    run = promote_run(
        sb,
        defs,
        {"registered_model": MODEL, "version": v1, "acting_as": "mlplat/promotion_sensor"},
        tags={"mlplat/launched_by": "vera@payments.example"},
    )
    assert not run.success
    assert (
        "refused by rule reserved-identity: 'mlplat/promotion_sensor' in the job config's "
        "acting_as is reserved for the platform's own sensors and cannot be claimed"
    ) in failure_of(run)
    assert sb.store.pending() == []
    # Refused before the workflow, and audited: the claim is evidence, not the actor.
    (record,) = sb.store.records()
    assert (record.actor, record.identity, record.action, record.outcome, record.version) == (
        "unidentified",
        "refused",
        "propose",
        "refused",
        v1,
    )
    assert record.reason in failure_of(run)
    assert record.evidence == {
        "rule": "reserved-identity",
        "via": "job promote_model",
        "claimed": "acting_as=mlplat/promotion_sensor, launched_by=vera@payments.example",
        "model": MODEL,
        "run_id": run.run_id,
    }


def test_a_forged_or_copied_sensor_proof_is_refused(gov_sandbox, defs):
    from platform_assets.governance.identity import sensor_proof

    sb = gov_sandbox
    v1, v2 = sb.register(0.30), sb.register(0.40)
    copied = sensor_proof(sb.store.keys, MODEL, v1)  # valid for v1 only
    for proof in ("0" * 64, copied):
        run = promote_run(
            sb, defs, {"registered_model": MODEL, "version": v2, "sensor_proof": proof}
        )
        assert not run.success
        assert (
            "refused by rule reserved-identity: the sensor proof of this run does not match "
            f"{MODEL} v{v2}; only the promotion sensor can act as it"
        ) in failure_of(run)
    refused = sb.store.records()
    assert [(r.actor, r.evidence["rule"], r.version) for r in refused] == [
        ("unidentified", "reserved-identity", v2)
    ] * 2


def test_sensor_skips_and_reports_events_without_metadata_and_keeps_going(gov_sandbox, defs):
    """Attack: a runless materialization without the expected metadata on an evaluation
    report used to raise KeyError with the cursor stuck, stopping promotions for everyone."""
    sb = gov_sandbox
    sb.instance.report_runless_asset_event(dg.AssetMaterialization(REPORT, metadata={"x": 1}))
    bad = sb.instance.fetch_materializations(REPORT, limit=1).records[0].storage_id
    result, cursor = tick(sb, defs, None)
    assert result.skip_message == (
        f"payments/evaluation_reports/fraud_detector event {bad}: reported outside a run; not "
        "evidence"
    )
    # The cursor moved past it: a good evaluation after it is submitted, the bad one not re-read.
    v1 = evaluated(sb, 0.30)
    requests, cursor = tick(sb, defs, cursor)
    assert [r.run_key for r in requests] == [f"promote:{MODEL}:{v1}"]
    again, _ = tick(sb, defs, cursor)
    assert again.skip_message == "no new evaluation reports"


def test_sensor_skips_run_events_missing_metadata(gov_sandbox, defs):
    """An evaluation report materialized by a run but without the metadata is named, too."""
    sb = gov_sandbox

    @dg.asset(key=REPORT)
    def bare():
        return dg.MaterializeResult(metadata={"registered_model": MODEL})

    run = dg.materialize([bare], instance=sb.instance)
    event = sb.instance.fetch_materializations(REPORT, limit=1).records[0]
    assert event.run_id == run.run_id
    result, _ = tick(sb, defs, None)
    assert result.skip_message == (
        f"payments/evaluation_reports/fraud_detector event {event.storage_id}: no "
        "model_version, metrics metadata"
    )


def test_sensor_reports_a_runless_forged_evaluation_without_raising(gov_sandbox, defs):
    sb = gov_sandbox
    sb.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            REPORT,
            metadata={
                "registered_model": MODEL,
                "model_version": 1,
                "metrics": dg.MetadataValue.json({"average_precision": 0.99}),
            },
        )
    )
    forged = sb.instance.fetch_materializations(REPORT, limit=1).records[0].storage_id
    result, _ = tick(sb, defs, None)
    assert result.skip_message == (
        f"payments/evaluation_reports/fraud_detector event {forged}: reported outside a run; "
        "not evidence"
    )
