"""The budget ledger: every attempt of a step billed, bad cost never counted, refreshes that
count each step once, and a run queue that refuses an over-budget tenant before the run starts."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.test_utils import create_run_for_test

from platform_assets.cost.budget import budget_status
from platform_assets.cost.ledger import ledger_engine, month_to_date, refresh
from platform_assets.cost.metering import meter
from platform_assets.cost.rollup import month_bounds, tenant_steps
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.specs import ComputeResources
from tests.cost.conftest import record_step
from tests.platform_sandbox import location_origin


def _month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _spent(instance, tenant: str) -> float:
    return month_to_date(instance, tenant, _month())


@pytest.mark.materialize
def test_failed_and_retried_attempts_are_each_billed(instance, tmp_path):
    flag = tmp_path / "failed_once"

    @dg.asset(key=["payments", "sources", "flaky"], retry_policy=dg.RetryPolicy(max_retries=1))
    def flaky(pricing: PricingResource):
        with meter("payments", ComputeResources(cpu=1, memory_gib=2), pricing.catalog()) as usage:
            sum(i * i for i in range(200_000))
            if not flag.exists():
                flag.touch()
                raise ConnectionError("tracking server unreachable")
        return dg.MaterializeResult(metadata=usage.metadata(pricing.catalog()))

    result = dg.materialize([flaky], instance=instance, resources={"pricing": PricingResource()})
    assert result.success
    [failed] = instance.fetch_observations(flaky.key, limit=10).records
    md = failed.asset_observation.metadata
    assert md["cost/failed"].value == "ConnectionError: tracking server unreachable"
    assert md["cost/usd"].value > 0
    [succeeded] = instance.fetch_materializations(flaky.key, limit=10).records
    expected = md["cost/usd"].value + succeeded.asset_materialization.metadata["cost/usd"].value
    assert _spent(instance, "payments") == pytest.approx(expected)
    start, end = month_bounds(_month())
    assert len(tenant_steps(instance, start, end, "payments")) == 2  # the showback agrees
    assert sum(s.usd for s in tenant_steps(instance, start, end)) == pytest.approx(expected)


@pytest.mark.materialize
def test_a_step_that_always_fails_is_billed_with_its_failure(instance):
    @dg.asset(key=["growth", "sources", "broken"])
    def broken(pricing: PricingResource):
        with meter("growth", ComputeResources(), pricing.catalog()):
            sum(i * i for i in range(200_000))
            raise ValueError("column 'user_id' is missing")

    result = dg.materialize(
        [broken], instance=instance, resources={"pricing": PricingResource()}, raise_on_error=False
    )
    assert not result.success
    assert _spent(instance, "growth") > 0


BAD_COST = {
    "negative": {"cost/usd": -5.0},
    "nan": {"cost/usd": math.nan},
    "infinite": {"cost/usd": math.inf},
    "negative cpu": {"cost/usd": 1.0, "cost/cpu_seconds": -1.0},
    "not a number": {"cost/usd": "lots"},
}


@pytest.mark.parametrize("bad", sorted(BAD_COST))
def test_bad_cost_metadata_never_counts(instance, bad):
    @dg.asset(key=["payments", "sources", "bad"])
    def reported():
        return dg.MaterializeResult(metadata={"cost/tenant": "payments", **BAD_COST[bad]})

    assert dg.materialize([reported], instance=instance).success
    assert _spent(instance, "payments") == 0.0
    start, end = month_bounds(_month())
    assert tenant_steps(instance, start, end) == []


def test_cost_reported_outside_a_step_never_counts(instance):
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=["payments", "sources", "x"],
            metadata={"cost/tenant": "payments", "cost/usd": 100.0},
        )
    )
    assert _spent(instance, "payments") == 0.0


def test_a_step_cannot_bill_another_tenant(instance):
    @dg.asset(key=["growth", "sources", "x"])
    def misattributed():
        return dg.MaterializeResult(metadata={"cost/tenant": "payments", "cost/usd": 100.0})

    assert dg.materialize([misattributed], instance=instance).success
    assert _spent(instance, "payments") == 0.0 and _spent(instance, "growth") == 0.0


def test_refreshes_count_each_step_once(instance):
    for usd in (1.0, 2.5, 0.25):
        record_step(instance, "ridehail", usd)
    threads = [threading.Thread(target=refresh, args=(instance,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refresh(instance) == 0
    assert _spent(instance, "ridehail") == pytest.approx(3.75)
    record_step(instance, "ridehail", 1.0)
    assert _spent(instance, "ridehail") == pytest.approx(4.75)  # only the new event was read
    with ledger_engine().connect() as conn:
        rows = conn.exec_driver_sql("select count(*) from cost_ledger_steps").scalar()
    assert rows == 4


def _coordinated(instance_dir) -> dg.DagsterInstance:
    instance_dir.mkdir()
    return dg.instance_for_test(
        temp_dir=str(instance_dir),
        overrides={
            "run_coordinator": {
                "module": "platform_assets.cost.coordinator",
                "class": "BudgetRunCoordinator",
            }
        },
    )


def _submit(instance: dg.DagsterInstance, tags: dict, selection=None) -> dg.DagsterRun:
    """What `instance.submit_run` hands the coordinator for every launch (UI, sensor, ...): a
    run of the tenant's pipeline from the tenant's own code location."""
    tenant = tags.get("tenant") or next(iter(selection)).path[0]
    job_name = f"{tenant}_pipeline"
    run = create_run_for_test(
        instance,
        job_name=job_name,
        tags=tags,
        asset_selection=selection,
        remote_job_origin=location_origin(tenant, job_name),
    )
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))


def test_run_coordinator_refuses_an_over_budget_tenant_before_start(tmp_path, limits):
    with _coordinated(tmp_path / "home") as instance:
        assert _submit(instance, {"tenant": "payments"}).status == dg.DagsterRunStatus.QUEUED
        record_step(instance, "payments", limits["payments"].budget.monthly_usd + 1)
        refused = _submit(instance, {"tenant": "payments"})
        assert refused.status == dg.DagsterRunStatus.FAILURE
        message = budget_status(instance, "payments").message
        failures = instance.get_records_for_run(
            refused.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        assert failures[0].event_log_entry.message == f"Refused before start: {message}"
        # A launch of the tenant's assets without the tag (the UI's Materialize) is refused too.
        key = dg.AssetKey(["payments", "sources", "card_transactions"])
        assert _submit(instance, {}, {key}).status == dg.DagsterRunStatus.FAILURE
        # Other tenants queue as usual.
        assert _submit(instance, {"tenant": "growth"}).status == dg.DagsterRunStatus.QUEUED
