"""A step whose process is killed by SIGKILL (as the OOM killer kills) bills nothing itself; the
reconciler bills it from the ledger's started row and Dagster's step events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.test_utils import create_run_for_test

from platform_assets.cost import ledger
from platform_assets.cost.metering import bill
from platform_assets.cost.reconcile import reconcile
from platform_assets.cost.rollup import all_steps, month_bounds
from platform_assets.cost.sensors import budget_sensor
from platform_assets.resources.pricing import PriceCatalog, PricingResource
from tests.cost.conftest import metered_asset
from tests.cost.killable_job import GRANTED, PID_FILE_ENV
from tests.platform_sandbox import location_origin

JOB_FILE = Path(__file__).with_name("killable_job.py")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before its step started"
        assert time.monotonic() < deadline, f"no step process wrote {path} in {timeout} s"
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.slow
def test_a_step_killed_by_sigkill_is_billed_to_its_tenant_for_the_time_it_ran(
    platform_home, tmp_path
):
    pid_file = tmp_path / "step.pid"
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "job", "execute", "-f", str(JOB_FILE)]
        + ["-j", "killable_job"],
        env={**os.environ, PID_FILE_ENV: str(pid_file)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        pid = _wait_for(pid_file, proc)
        seen = time.time()
        assert pid != proc.pid  # the step's own process, not the run's
        time.sleep(4)
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        proc.wait(timeout=180)  # the executor reports the crashed step, the run fails
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    prices = PriceCatalog.load()
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.FAILURE
        month = datetime.now(UTC).strftime("%Y-%m")
        # Nothing billed the step: its process died inside `meter`.
        assert ledger.month_to_date(instance, "ridehail", month) == 0

        # The budget sensor's tick reconciles before it judges budgets.
        budget_sensor(dg.build_sensor_context(instance=instance))

        [step] = all_steps(instance, *month_bounds(month))
        assert (step.tenant, step.asset_key, step.run_id) == (
            "ridehail",
            "ridehail/sources/killable",
            run.run_id,
        )
        # From Dagster's STEP_START (a moment before the step wrote its pid) to the executor's
        # report of the crash (a moment after the kill), x the resources granted.
        assert killed - seen <= step.wall_seconds <= killed - seen + 5
        # The ledger keeps wall seconds to the millisecond and dollars to 1e-8, each rounded.
        rounding = bill(GRANTED, 0.0005, 0, 0, prices) + 0.5e-8
        assert step.usd == pytest.approx(
            bill(GRANTED, step.wall_seconds, 0, 0, prices), abs=rounding
        )
        assert step.usd > 0
        [bill_event] = instance.fetch_observations(
            dg.AssetKey(["ridehail", "sources", "killable"]), limit=10
        ).records
        failed = bill_event.asset_observation.metadata["cost/failed"].value
        assert failed == (
            "the step's process ended without billing itself (SIGKILL, OOM kill or eviction); "
            "billed from its STEP_START to its step's failure"
        )
        # The ledger (budgets) counts it, once: the started row is closed.
        assert ledger.month_to_date(instance, "ridehail", month) == pytest.approx(step.usd)
        assert reconcile(instance, prices).billed == []
        assert ledger.month_to_date(instance, "ridehail", month) == pytest.approx(step.usd)


def _started(instance, run_id: str, tenant: str = "ridehail") -> float:
    """The started row `meter` leaves for a step of `tenant` in `run_id`; returns its time."""
    at = time.time()
    ledger.record_start(instance, run_id, "work", tenant, f"{tenant}/sources/work", GRANTED, at)
    return at


def test_a_step_that_billed_itself_is_closed_not_billed_again(instance):
    resources = {"pricing": PricingResource()}
    assert dg.materialize(
        [metered_asset("ridehail")], instance=instance, resources=resources
    ).success
    result = reconcile(instance)
    assert (result.billed, result.refused) == ([], [])
    t = ledger.schema()
    with ledger.ledger_engine().connect() as conn:
        assert conn.execute(sa.select(t.started.c.outcome)).scalars().all() == [
            "billed by the step"
        ]


def test_a_step_is_billed_once_its_run_ended_to_the_runs_end(instance):
    """A pod evicted with its run leaves no step failure: the run's end closes the span."""
    run = create_run_for_test(
        instance, job_name="ridehail_pipeline", status=dg.DagsterRunStatus.STARTED
    )
    started = _started(instance, run.run_id)
    assert reconcile(instance).billed == []  # the step may still bill itself
    time.sleep(1)
    instance.report_run_failed(instance.get_run_by_id(run.run_id), "pod evicted")
    [step] = reconcile(instance).billed
    end = instance.get_run_record_by_id(run.run_id).end_time
    assert (step.tenant, step.ended_by, step.started) == ("ridehail", "its run's end", started)
    assert step.wall_seconds == pytest.approx(end - started)
    assert step.wall_seconds >= 1


def test_a_started_row_of_a_run_another_tenants_location_launched_is_not_billed(instance):
    run = create_run_for_test(
        instance,
        job_name="growth_pipeline",
        status=dg.DagsterRunStatus.FAILURE,
        remote_job_origin=location_origin("growth", "growth_pipeline"),
    )
    _started(instance, run.run_id, tenant="ridehail")
    result = reconcile(instance)
    assert result.billed == []
    assert result.refused == [
        f"step work of run {run.run_id}: its started row bills tenant 'ridehail' but the run "
        "was launched from tenant 'growth''s code location"
    ]


def test_a_started_row_of_a_deleted_run_is_closed_naming_it(instance):
    _started(instance, "0" * 36)
    result = reconcile(instance)
    assert result.refused == [
        f"step work of run {'0' * 36}: the run was deleted, nothing observed to bill from"
    ]
    assert reconcile(instance).refused == []  # closed: said once


@pytest.mark.services
def test_started_rows_are_recorded_and_reconciled_on_postgres(instance, postgres_url, monkeypatch):
    """The ledger's started rows on Postgres (the services and k8s platform database), in a
    schema of this test's own: a reopened retry, a killed step billed to its run's end."""
    schema = f"mlplat_started_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    monkeypatch.setenv("MLPLAT_DB_URL", f"{postgres_url}?options=-csearch_path%3D{schema}")
    try:
        run = create_run_for_test(
            instance, job_name="ridehail_pipeline", status=dg.DagsterRunStatus.STARTED
        )
        _started(instance, run.run_id)
        retried = _started(instance, run.run_id)  # the step's second attempt: one row, reopened
        instance.report_run_failed(instance.get_run_by_id(run.run_id), "node lost")
        [step] = reconcile(instance).billed
        assert (step.tenant, step.started, step.ended_by) == ("ridehail", retried, "its run's end")
        month = datetime.now(UTC).strftime("%Y-%m")
        assert ledger.month_to_date(instance, "ridehail", month) == pytest.approx(step.usd)
        with ledger.ledger_engine().connect() as conn:
            assert conn.execute(sa.text("select current_schema()")).scalar() == schema
    finally:
        ledger.ledger_engine().dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
