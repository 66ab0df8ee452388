"""Retraining on drift under the real daemon (`dagster dev`, tests/dagster_dev.py), its sensor
ticking every two seconds (`MLPLAT_RETRAIN_INTERVAL_SECONDS`) so that minutes of ticks pass in
seconds: drift on unchanged data retrains nothing, new data retrains once and then converges,
and the cooldown holds newer data back. payments only, its champion built as production builds
it (retrain_state.py); the cooldown starts at 0 (the platform's bound lowered in a limits file
of the test's) so that only the data rules hold retraining back until the cooldown test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest
import yaml

from platform_assets.monitoring.sensors import INTERVAL_ENV, REASON_TAG
from platform_assets.tenancy.limits import LIMITS_ENV, LIMITS_PATH
from platform_assets.tenancy.runs import automation_sensor_name
from tests.dagster_dev import Dev, wait_for
from tests.monitoring.retrain_state import (
    MODEL,
    SOURCES,
    champion_with_drift,
    deliver,
    edit_payments,
    retrain_runs,
    set_cooldown,
)

pytestmark = [pytest.mark.slow, pytest.mark.materialize]

INTERVAL = 2  # seconds between ticks, against 300 in production
SENSOR = "payments_drift_retrain"
# Thirty minutes of production ticks, twice over.
TICKS = 2 * 30 * 60 // 300


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("retrain-daemon")
    limits = yaml.safe_load(LIMITS_PATH.read_text())
    limits["defaults"]["retrain"]["min_cooldown_hours"] = 0
    (tmp / "limits.yaml").write_text(yaml.safe_dump(limits, sort_keys=False))
    server = Dev(
        tmp,
        tenants=("payments",),
        env={INTERVAL_ENV: str(INTERVAL), LIMITS_ENV: str(tmp / "limits.yaml")},
    )
    edit_payments(server.defs, cooldown_hours=0)
    # The champion and its drift first, before the code servers compete for the cores.
    with server.in_process("payments") as defs, server.instance() as instance:
        assert champion_with_drift(defs, instance), "the champion's drift checks fail"
    server.start()
    try:
        server.wait_until_loaded()
        # Eager automation would rebuild the lineage after a new source snapshot on its own;
        # these tests are about the drift sensor alone.
        server.stop_sensor("payments", automation_sensor_name("payments"))
        yield server
    finally:
        server.stop()


def _runs(dev: Dev) -> list[dg.DagsterRun]:
    with dev.instance() as instance:
        return retrain_runs(instance)


def _ticks_after(dev: Dev, since: float) -> list[dict]:
    """The sensor's completed ticks since `since`, newest first."""
    return [
        t
        for t in dev.ticks("payments", SENSOR, limit=200)
        if t["timestamp"] > since and t["status"] != "STARTED"
    ]


def _tick(dev: Dev, since: float, count: int = 1) -> list[dict]:
    """Wait for `count` completed ticks after `since` (each a few seconds apart); returns them,
    newest first."""

    def enough() -> list[dict] | None:
        ticks = _ticks_after(dev, since)
        return ticks if len(ticks) >= count else None

    return wait_for(f"{count} ticks of {SENSOR}", enough, 60 + count * INTERVAL * 6)  # type: ignore[return-value]


def _new_transactions(dev: Dev, share: float) -> None:
    """A new delivery in payments' inbox and the run of its source step that snapshots it."""
    with dev.in_process("payments") as defs, dev.instance() as instance:
        deliver(defs.resources["lake"].root, share)
        result = defs.resolve_job_def("payments_pipeline").execute_in_process(
            instance=instance, asset_selection=[SOURCES]
        )
        assert result.success


def test_ticks_for_thirty_minutes_on_unchanged_data_retrain_nothing(dev):
    """The done-when of issue #23: with the daemon running on the demo's unchanged data, no
    model retrains more than once; with its champion trained on that very data, not at all."""
    start = time.time()
    ticks = _tick(dev, start, TICKS)
    assert _runs(dev) == []
    for tick in ticks:
        assert tick["status"] == "SKIPPED", tick
        assert tick["skipReason"].startswith(
            f"{MODEL}: drift checks failed, but there is no data v1 has not seen"
        ), tick


@dataclass
class Retrained:
    run: dg.DagsterRun
    finished: float


@pytest.fixture(scope="module")
def retrained(dev: Dev) -> Retrained:
    """New transactions delivered and snapshotted: the one retrain they start, finished."""
    assert _runs(dev) == []
    _new_transactions(dev, 0.95)
    (run,) = wait_for("the retrain run", lambda: _runs(dev), 60 + INTERVAL * 6)
    done = wait_for(
        "the retrain run to finish",
        lambda: [r for r in _runs(dev) if r.is_finished],
        600,
    )
    return Retrained(done[0], time.time())


def test_new_data_retrains_once_and_then_converges(dev, retrained):
    run = retrained.run
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
    assert run.tags[REASON_TAG].startswith(
        f"drift of {MODEL} with new data (payments/sources/transactions@"
    )
    # The retrain's model is a new version that nobody promoted: the champion still has not
    # seen this data, and the sensor still declines to train on it again.
    ticks = _tick(dev, retrained.finished, TICKS)
    assert [r.run_id for r in _runs(dev)] == [run.run_id]
    for tick in ticks:
        assert tick["status"] == "SKIPPED", tick
        assert tick["skipReason"].startswith(f"{MODEL}: already retrained on this data"), tick
        assert run.run_id in tick["skipReason"]


def test_the_cooldown_holds_newer_data_back(dev, retrained):
    set_cooldown(dev.defs, 1)
    reloaded = dev.reload("payments")
    assert reloaded["__typename"] == "RepositoryLocation", reloaded
    _new_transactions(dev, 1.0)
    landed = time.time()
    ticks = _tick(dev, landed, 3)
    assert [r.run_id for r in _runs(dev)] == [retrained.run.run_id]
    for tick in ticks:
        assert tick["status"] == "SKIPPED", tick
        assert tick["skipReason"].startswith(
            f"{MODEL}: new data, but within its retrain cooldown (1 h) of run "
            f"{retrained.run.run_id} launched "
        ), tick
