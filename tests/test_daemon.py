"""Under the real daemon (`dagster dev` on a generated workspace): automation gates on blocking
checks, and a broken or renamed tenant folder fails only its own code location."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import AUTOMATION_CONDITION_TAG

from platform_assets.data.generator import generate
from platform_assets.tenancy.limits import limits_for
from tests.cost.conftest import record_step
from tests.dagster_dev import DEMO_DEFS, Dev, dagster_dev, error_text, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.materialize]

TRIPS = dg.AssetKey(["ridehail", "sources", "trips"])
DRIVER_STATS = dg.AssetKey(["ridehail", "features", "driver_stats"])
EVENTS = dg.AssetKey(["growth", "sources", "events"])
LABELS = dg.AssetKey(["growth", "sources", "subscription_labels"])

BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[Dev]:
    with dagster_dev(tmp_path_factory.mktemp("daemon")) as server:
        yield server


def _instance(dev: Dev) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(dev.home))


def _materialize(dev: Dev, monkeypatch, key: dg.AssetKey) -> dg.ExecuteInProcessResult:
    """One run of the source `key` on the daemon's instance, built from the same folders."""
    from platform_assets.composition.locations import tenant_location
    from platform_assets.tenancy import catalog
    from platform_assets.tenancy.locations import location_named

    for name in ("DAGSTER_HOME", "MLPLAT_ENV", "MLPLAT_DATA", "MLPLAT_DEFS_ROOT"):
        monkeypatch.setenv(name, dev.env[name])
    catalog.load_tenant.cache_clear()
    defs = tenant_location(location_named(key.path[0]))
    with _instance(dev) as instance:
        return defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[key], raise_on_error=False
        )


def _materialize_trips(dev: Dev, monkeypatch) -> dg.ExecuteInProcessResult:
    return _materialize(dev, monkeypatch, TRIPS)


def _driver_stats_runs(dev: Dev) -> list[dg.DagsterRun]:
    with _instance(dev) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"tenant": "ridehail"}))
        return [r for r in runs if r.asset_selection and DRIVER_STATS in r.asset_selection]


def _finished(runs: list[dg.DagsterRun]) -> bool:
    return bool(runs) and all(r.is_finished for r in runs)


def _schedule_driver_stats(dev: Dev, cron: str | None) -> None:
    """Set (or, with None, remove) driver_stats' schedule and reload ridehail's location."""
    path = dev.defs / "ridehail" / "features" / "driver_stats" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["attributes"].pop("schedule", None)
    if cron is not None:
        doc["attributes"]["schedule"] = cron
    path.write_text(yaml.safe_dump(doc))
    assert dev.reload("ridehail")["__typename"] == "RepositoryLocation"


def test_automation_gates_on_a_failed_blocking_check(dev, monkeypatch):
    # Unscheduled, driver_stats follows its source's new data at once (its demo schedule would
    # also hold it to 02:00).
    _schedule_driver_stats(dev, None)
    assert _materialize_trips(dev, monkeypatch).success
    # Passing checks: the ridehail automation sensor launches the feature views, tagged.
    runs = wait_for("automation to run driver_stats", lambda: _driver_stats_runs(dev), 300)
    assert all(r.tags["tenant"] == "ridehail" for r in runs)
    wait_for("the automation run to finish", lambda: _finished(_driver_stats_runs(dev)), 600)
    before = len(_driver_stats_runs(dev))

    path = dev.defs / "ridehail" / "sources" / "trips" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["expectations"].append(
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "fare", "min_value": 0, "max_value": 5},
        }
    )
    path.write_text(yaml.safe_dump(doc))
    failed = _materialize_trips(dev, monkeypatch)
    assert not failed.success
    ended = time.time()
    # Two full ticks of the sensor after the failed check: neither requests driver_stats.
    wait_for(
        "two automation ticks after the failed check",
        lambda: (
            len(
                [
                    t
                    for t in dev.ticks("ridehail", "ridehail_automation")
                    if t["timestamp"] > ended and t["status"] != "STARTED"
                ]
            )
            >= 2
        ),
        180,
    )
    assert len(_driver_stats_runs(dev)) == before


def test_a_broken_tenant_fails_only_its_own_location(dev):
    ticks_before = len(dev.ticks("ridehail", "ridehail_automation"))
    bad = dev.defs / "payments" / "models" / "fraud_detector" / "defs.yaml"
    bad.write_text(bad.read_text().replace("algorithm:", "algorithmz:"))
    error = dev.reload("payments")
    assert error["__typename"] == "PythonError"
    assert f"{bad.resolve()}: attributes.algorithmz: Extra inputs are not permitted" in error_text(
        error
    )
    platform = dev.reload("platform")  # the platform location loads whatever payments holds
    assert platform["__typename"] == "RepositoryLocation"
    locations = dev.locations()
    assert locations["payments"]["__typename"] == "PythonError"
    for name in ("platform", "growth", "ridehail"):
        assert locations[name]["__typename"] == "RepositoryLocation", name
    # The other locations' sensors keep ticking under the daemon.
    wait_for(
        "ridehail's automation to keep ticking",
        lambda: len(dev.ticks("ridehail", "ridehail_automation")) >= ticks_before + 2,
        180,
    )
    assert dev.ticks("growth", "growth_automation")
    assert dev.ticks("platform", "promotion_sensor")


def test_a_backfill_launched_without_tags_runs_tagged_with_its_tenant(dev):
    """Backfill runs reach the queue through the coordinator in dagster.yaml, which tags them."""
    params = {
        "partitionNames": ["2026-11-03"],
        "assetSelection": [{"path": ["ridehail", "cost"]}],
        "fromFailure": False,
    }
    launched = dev.graphql(BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = {"dagster/backfill": launched["backfillId"]}

    def runs() -> list[dg.DagsterRun]:
        with _instance(dev) as instance:
            return instance.get_runs(dg.RunsFilter(tags=backfill))

    (run,) = wait_for("the backfill's run", runs, 180)
    assert run.tags["tenant"] == "ridehail"
    assert run.asset_selection == frozenset({dg.AssetKey(["ridehail", "cost"])})


def _sensor_runs(dev: Dev, sensor: str) -> list[dg.DagsterRun]:
    with _instance(dev) as instance:
        return instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": sensor}))


def test_a_new_file_in_the_inbox_starts_one_pipeline_run(dev, monkeypatch):
    # growth's events now arrive as a file in its inbox, watched.
    path = dev.defs / "growth" / "sources" / "events" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["attributes"]["generator"]
    doc["attributes"] |= {"path": "events.parquet", "on_new_file": True}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert dev.reload("growth")["__typename"] == "RepositoryLocation"
    # The training set downstream also reads the labels: their snapshot first.
    assert _materialize(dev, monkeypatch, LABELS).success
    wait_for(
        "growth's inbox sensor to tick (running by default)",
        lambda: dev.ticks("growth", "growth_inbox"),
        180,
    )

    inbox = Path(dev.env["MLPLAT_DATA"]) / "lake" / "growth" / "inbox"
    inbox.mkdir(parents=True)
    events = generate("growth.events")
    events.to_parquet(inbox / ".events.parquet.tmp")
    os.replace(inbox / ".events.parquet.tmp", inbox / "events.parquet")

    (run,) = wait_for("the inbox sensor's run", lambda: _sensor_runs(dev, "growth_inbox"), 300)
    assert run.job_name == "growth_pipeline"
    assert run.tags["tenant"] == "growth"
    assert run.tags["mlplat/reason"] == "new file events.parquet in growth's inbox (source events)"
    assert {
        "growth/sources/events",
        "growth/features/user_engagement",
        "growth/training_sets/subscription_churn",
        "growth/models/subscription_churn",
        "growth/evaluation_reports/subscription_churn",
    } <= {k.to_user_string() for k in run.asset_selection}
    wait_for("the run to finish", lambda: _finished(_sensor_runs(dev, "growth_inbox")), 900)
    ended = time.time()
    with _instance(dev) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
        [record] = instance.fetch_materializations(EVENTS, limit=1).records
    assert record.run_id == run.run_id
    assert record.asset_materialization.metadata["dagster/row_count"].value == len(events)

    # The same file: no second run over the next ticks.
    wait_for(
        "two inbox ticks after the run",
        lambda: (
            len([t for t in dev.ticks("growth", "growth_inbox") if t["timestamp"] > ended]) >= 2
        ),
        180,
    )
    assert len(_sensor_runs(dev, "growth_inbox")) == 1


def test_a_renamed_tenant_folder_names_the_missing_folder_on_reload(dev):
    (dev.defs / "growth").rename(dev.defs / "growth_team")
    error = dev.reload("growth")
    assert error["__typename"] == "PythonError"
    missing = dev.defs.resolve() / "growth"
    assert f"code location 'growth' has no tenant folder {missing}" in error_text(error)
    assert "`mlplat workspace write`" in error_text(error)
    assert dev.locations()["ridehail"]["__typename"] == "RepositoryLocation"


def _trips_runs(dev: Dev, since: float) -> list[dg.DagsterRun]:
    """Runs of the trips source that ridehail's automation sensor launched after `since`."""
    with _instance(dev) as instance:
        records = instance.get_run_records(
            dg.RunsFilter(
                tags={AUTOMATION_CONDITION_TAG: "true"},
                created_after=datetime.fromtimestamp(since, UTC),
            )
        )
    runs = [r.dagster_run for r in records]
    return [r for r in runs if r.asset_selection and TRIPS in r.asset_selection]


def test_a_yaml_schedule_runs_under_the_daemon_on_changed_data_only_and_within_budget(
    dev, monkeypatch
):
    """Last in the module: it leaves ridehail over budget."""
    # The first test's failing expectation goes; driver_stats is scheduled every minute.
    trips_yaml = Path("ridehail/sources/trips/defs.yaml")
    shutil.copy(DEMO_DEFS / trips_yaml, dev.defs / trips_yaml)
    _schedule_driver_stats(dev, "* * * * *")
    # Trips as the first test left them (or, run alone, their first snapshot, which driver_stats
    # is then built from at the next tick).
    assert _materialize_trips(dev, monkeypatch).success
    wait_for("driver_stats to be built", lambda: _finished(_driver_stats_runs(dev)), 600)
    started = time.time()
    stats_before = len(_driver_stats_runs(dev))

    # The sensor refreshes driver_stats' source at the ticks, in runs tagged with the tenant.
    # (Counting successes: at a load average of 30 a run can fail to dequeue, its code server
    # not answering within Dagster's 60 s.)
    def succeeded() -> list[dg.DagsterRun]:
        runs = _trips_runs(dev, started)
        return [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]

    wait_for("two scheduled runs of trips to succeed", lambda: len(succeeded()) >= 2, 600)
    runs = succeeded()
    assert all(r.tags["tenant"] == "ridehail" for r in runs)
    assert all(r.asset_selection == frozenset({TRIPS}) for r in runs)
    # The generator gives the same rows each time: driver_stats is not rebuilt on them.
    assert len(_driver_stats_runs(dev)) == stats_before
    # A tick never starts a refresh while one is running, however long it takes.
    with _instance(dev) as instance:
        records = sorted(
            (instance.get_run_record_by_id(r.run_id) for r in _trips_runs(dev, started)),
            key=lambda record: record.create_timestamp,
        )
    for previous, following in pairwise(records):
        assert previous.end_time is not None, previous.dagster_run
        assert following.create_timestamp.timestamp() >= previous.end_time

    # Over budget, the next tick's run is refused by the run coordinator before it starts.
    for key in ("DAGSTER_HOME", "MLPLAT_ENV", "MLPLAT_DATA", "MLPLAT_DEFS_ROOT"):
        monkeypatch.setenv(key, dev.env[key])
    with _instance(dev) as instance:
        record_step(instance, "ridehail", limits_for("ridehail").budget.monthly_usd + 1)
    over = time.time()
    refused = wait_for(
        "the next scheduled run to be refused",
        lambda: [r for r in _trips_runs(dev, over) if r.is_finished],
        300,
    )
    for run in refused:  # every run the sensor started since
        assert run.status == dg.DagsterRunStatus.FAILURE
        with _instance(dev) as instance:
            events = [e.dagster_event_type for e in instance.all_logs(run.run_id)]
            [failure] = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
            ).records
        message = failure.event_log_entry.message
        assert message.startswith("Refused before start: tenant 'ridehail' has spent $"), message
        assert "over budget, new runs are not launched" in message
        assert dg.DagsterEventType.STEP_START not in events
