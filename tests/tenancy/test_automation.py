"""Schedules and freshness targets from team YAML become Dagster automation (issue #23, item 3).

The conditions are evaluated by Dagster's own evaluator on the demo tenants' real definitions,
at chosen times; what lands in the lake is recorded as the materializations a step records (a
data version, the step's blocking checks passed), so weeks of cron ticks take seconds. The
steps themselves run in tests/test_pipeline.py and under the daemon in tests/test_daemon.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from platform_assets.composition.locations import all_locations, tenant_assets, tenant_location
from platform_assets.observability.slo import freshness_policies
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.locations import location_named

# Its autouse fixture too: each test reads the YAML as it edited it.
from tests.tenancy.test_team_folders import _fresh_catalog, edit, refused  # noqa: F401

TENANT_FILE = Path("ridehail/tenant/defs.yaml")
FEATURE_FILE = Path("ridehail/features/driver_stats/defs.yaml")
MODEL_FILE = Path("ridehail/models/driver_churn/defs.yaml")


def key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


# The YAML


def test_a_cron_that_does_not_parse_is_refused_naming_the_file_and_field(root):
    edit(root / MODEL_FILE, schedule="0 25 * * 1")
    assert refused(root) == (
        f"{root / MODEL_FILE}: attributes.schedule: '0 25 * * 1' is not a cron Dagster can run: "
        "five fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * *' for 03:00 "
        "every day or '0 4 * * 1' for 04:00 on Mondays"
    )


def test_a_time_zone_that_is_not_an_iana_name_is_refused(root):
    edit(root / TENANT_FILE, timezone="Europe/Paris ")
    assert refused(root) == (
        f"{root / TENANT_FILE}: attributes.timezone: 'Europe/Paris ' is not an IANA time zone "
        "name (e.g. 'UTC', 'Europe/Berlin', 'America/New_York')"
    )


def test_a_schedule_and_a_freshness_target_on_one_asset_are_refused(root):
    edit(root / FEATURE_FILE, freshness={"fail_after_hours": 30})
    assert refused(root) == (
        f"{root / FEATURE_FILE}: attributes.freshness: set `schedule` or `freshness`, not both: "
        "a schedule rebuilds it at each tick of its cron, a freshness target when it turns stale"
    )


def test_a_tenant_without_a_time_zone_is_in_utc():
    catalogs = load_all()
    assert catalogs["ridehail"].tenant.timezone == "UTC"
    assert catalogs["payments"].tenant.timezone == "Europe/Berlin"


# What Dagster gets


def test_the_demo_schedules_become_conditions_and_no_schedule_definitions():
    defs = all_locations()
    graph = defs.resolve_asset_graph()

    def label(path: str) -> str | None:
        condition = graph.get(key(path)).automation_condition
        return condition.get_label() if condition else None

    # Sources refresh at the ticks of what is built from them, in the tenant's time zone.
    assert label("ridehail/sources/trips") == ("on_cron(0 2 * * *, UTC) | on_cron(0 4 * * 1, UTC)")
    assert label("ridehail/sources/driver_churn_labels") == "on_cron(0 4 * * 1, UTC)"
    assert label("payments/sources/transactions") == (
        "on_cron(0 2 * * *, Europe/Berlin) | on_cron(0 4 * * 1, Europe/Berlin)"
    )
    # growth's model has a freshness target, not a schedule: its own sources refresh when it
    # turns stale; its feature sets are nightly.
    assert label("growth/sources/subscription_labels") == "a freshness target turned stale"
    assert label("growth/sources/events") == (
        "on_cron(0 2 * * *, UTC) | a freshness target turned stale"
    )
    # The scheduled assets are held to their cron; everything else follows changed data.
    assert label("ridehail/features/driver_stats") == (
        "eager_on_changed_data, once per tick of 0 2 * * * (UTC)"
    )
    assert label("payments/training_sets/fraud_detector") == (
        "eager_on_changed_data, once per tick of 0 4 * * 1 (Europe/Berlin)"
    )
    for path in ("ridehail/models/driver_churn", "growth/training_sets/subscription_churn"):
        assert label(path) == "eager_on_changed_data"
    # No tenant has a schedule definition: the automation sensors (RUNNING) do it all.
    repo = defs.get_repository_def()
    assert {s.name for s in repo.schedule_defs} == {
        "lake_retention_schedule",
        "slo_report_schedule",
    }
    for tenant in ("ridehail", "payments", "growth"):
        sensor = repo.get_sensor_def(f"{tenant}_automation")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_a_freshness_target_is_the_assets_freshness_policy_and_slo():
    graph = tenant_location(location_named("growth")).resolve_asset_graph()
    policy = graph.get(key("growth/models/subscription_churn")).freshness_policy
    assert policy.fail_window.to_timedelta() == timedelta(hours=192)
    assert policy.warn_window.to_timedelta() == timedelta(hours=168)
    slos = freshness_policies(load_all()["growth"], tenant_assets)
    assert slos[key("growth/models/subscription_churn")].target == 0.95
    # The tenant's SLO for its type still gives the feature views theirs.
    assert slos[key("growth/features/user_engagement")].fail_after_hours == 26


# How it behaves over time


class Lake:
    """A tenant location's assets landing as their steps record them, and Dagster's automation
    evaluator ticking at chosen times."""

    def __init__(self, instance: dg.DagsterInstance, tenant: str):
        self.instance = instance
        self.defs = tenant_location(location_named(tenant))
        self.graph = self.defs.resolve_asset_graph()
        self.cursor = None

    def land(self, version: str, *paths: str) -> None:
        """What the steps of `paths` record: each its materialization with the lake snapshot's
        version as its data version, and its blocking checks passed."""
        for asset in map(key, paths):
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(asset, tags={DATA_VERSION_TAG: version})
            )
            for check in self.graph.get(asset).check_keys:
                self.instance.report_runless_asset_event(
                    dg.AssetCheckEvaluation(asset_key=asset, check_name=check.name, passed=True)
                )

    def land_all(self, version: str) -> None:
        self.land(
            version,
            *(
                asset.to_user_string()
                for asset in self.graph.toposorted_asset_keys
                if self.graph.get(asset).is_materializable
                and not self.graph.get(asset).is_partitioned
            ),
        )

    def tick(self, at: datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=at
        )
        self.cursor = result.cursor
        return {
            r.key.to_user_string()
            for r in result.results
            if isinstance(r.key, dg.AssetKey) and r.true_subset.size
        }


MONDAY = datetime(2026, 1, 5, tzinfo=UTC)  # 2026-01-05 is a Monday


def test_a_weekly_model_retrains_once_a_week_and_only_on_changed_data(instance):
    ridehail = Lake(instance, "ridehail")
    ridehail.land_all("v1")
    tuesday = MONDAY + timedelta(days=1)
    assert ridehail.tick(tuesday + timedelta(hours=1)) == set()

    # 02:00, the feature sets' tick: their source refreshes; nothing else yet.
    assert ridehail.tick(tuesday + timedelta(hours=2, minutes=1)) == {"ridehail/sources/trips"}
    # It read what it read yesterday (the same snapshot version): nothing downstream runs.
    ridehail.land("v1", "ridehail/sources/trips")
    assert ridehail.tick(tuesday + timedelta(hours=2, minutes=2)) == set()
    # New trips: both feature views rebuild; the weekly models wait for Monday.
    ridehail.land("v2", "ridehail/sources/trips")
    assert ridehail.tick(tuesday + timedelta(hours=2, minutes=3)) == {
        "ridehail/features/driver_stats",
        "ridehail/features/zone_demand",
    }
    ridehail.land("v2", "ridehail/features/driver_stats", "ridehail/features/zone_demand")
    assert ridehail.tick(tuesday + timedelta(hours=2, minutes=4)) == {
        "ridehail/online/driver_stats",
        "ridehail/online/zone_demand",
    }
    assert ridehail.tick(tuesday + timedelta(hours=3)) == set()

    # Monday 04:00, the models' tick: their sources refresh first...
    monday = MONDAY + timedelta(days=7)
    assert ridehail.tick(monday + timedelta(hours=2, minutes=1)) == {"ridehail/sources/trips"}
    ridehail.land("v2", "ridehail/sources/trips")
    assert ridehail.tick(monday + timedelta(hours=2, minutes=2)) == set()
    assert ridehail.tick(monday + timedelta(hours=4, minutes=1)) == {
        "ridehail/sources/trips",
        "ridehail/sources/driver_churn_labels",
    }
    assert ridehail.tick(monday + timedelta(hours=4, minutes=2)) == set()
    # ...then the training sets build once, on Tuesday's features.
    ridehail.land("v2", "ridehail/sources/trips")
    ridehail.land("v1", "ridehail/sources/driver_churn_labels")
    assert ridehail.tick(monday + timedelta(hours=4, minutes=3)) == {
        "ridehail/training_sets/driver_churn",
        "ridehail/training_sets/driver_churn_lgbm",
    }
    ridehail.land(
        "v2", "ridehail/training_sets/driver_churn", "ridehail/training_sets/driver_churn_lgbm"
    )
    # One run: the models, then their evaluations (which read the training sets too).
    assert ridehail.tick(monday + timedelta(hours=4, minutes=4)) == {
        "ridehail/models/driver_churn",
        "ridehail/models/driver_churn_lgbm",
        "ridehail/evaluation_reports/driver_churn",
        "ridehail/evaluation_reports/driver_churn_lgbm",
        "ridehail/drift/driver_churn",
        "ridehail/drift/driver_churn_lgbm",
    }
    assert ridehail.tick(monday + timedelta(hours=5)) == set()

    # A week in which nothing changed: the sources refresh at every tick, nothing retrains.
    next_monday = monday + timedelta(days=7)
    assert ridehail.tick(next_monday + timedelta(hours=4, minutes=1)) == {
        "ridehail/sources/trips",
        "ridehail/sources/driver_churn_labels",
    }
    ridehail.land("v2", "ridehail/sources/trips")
    ridehail.land("v1", "ridehail/sources/driver_churn_labels")
    assert ridehail.tick(next_monday + timedelta(hours=4, minutes=2)) == set()
    assert ridehail.tick(next_monday + timedelta(hours=5)) == set()


def test_a_schedule_ticks_in_the_tenants_time_zone(instance):
    payments = Lake(instance, "payments")
    payments.land_all("v1")
    tuesday = MONDAY + timedelta(days=1)
    assert payments.tick(tuesday) == set()
    # 02:00 in Berlin is 01:00 UTC in January, not 02:00 UTC.
    assert payments.tick(tuesday + timedelta(minutes=59)) == set()
    assert payments.tick(tuesday + timedelta(hours=1, minutes=1)) == {
        "payments/sources/transactions"
    }
    assert payments.tick(tuesday + timedelta(hours=2, minutes=1)) == set()


def test_a_freshness_target_refreshes_the_sources_once_when_it_turns_stale(instance):
    growth = Lake(instance, "growth")
    growth.land_all("v1")
    model = key("growth/models/subscription_churn")
    start = MONDAY + timedelta(hours=12)  # between the nightly ticks
    assert growth.tick(start) == set()

    # What the freshness daemon records when the model is a week old.
    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=model,
            previous_state=FreshnessState.PASS,
            new_state=FreshnessState.WARN,
            state_change_timestamp=start.timestamp(),
        )
    )
    roots = {"growth/sources/events", "growth/sources/subscription_labels"}
    assert growth.tick(start + timedelta(minutes=1)) == roots
    # Still stale on the same data: no second refresh, and nothing retrains.
    growth.land("v1", "growth/sources/events", "growth/sources/subscription_labels")
    assert growth.tick(start + timedelta(minutes=2)) == set()
    assert growth.tick(start + timedelta(minutes=3)) == set()
