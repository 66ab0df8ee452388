"""A tenant's whole graph materialized in-process on real DuckDB, Feast, MLflow and GX."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from platform_assets.data.generator import generate
from platform_assets.models.artifacts import artifact_digest
from tests.platform_sandbox import sandbox

pytestmark = pytest.mark.materialize
TRIPS = dg.AssetKey(["ridehail", "sources", "trips"])


def _run(defs: dg.Definitions, instance, job: str = "ridehail_pipeline"):
    return defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:"
        f"{e.asset_check_evaluation_data.check_name}": e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _materialized(result) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ridehail(monkeypatch, platform_home, instance):
    with sandbox(monkeypatch) as (root, build):
        yield root, build, instance


def test_full_tenant_graph(ridehail, platform_home):
    root, build, instance = ridehail
    defs = build()
    result = _run(defs, instance)
    assert result.success
    assert _materialized(result) == {
        "ridehail/sources/trips",
        "ridehail/sources/driver_churn_labels",
        "ridehail/features/driver_stats",
        "ridehail/features/zone_demand",
        "ridehail/online/driver_stats",
        "ridehail/online/zone_demand",
        "ridehail/training_sets/driver_churn",
        "ridehail/models/driver_churn",
        "ridehail/evaluation_reports/driver_churn",
    }
    checks = _checks(result)
    # 8 data checks, plus the model's champion_alias check (no champion, no alias: in agreement).
    assert len(checks) == 9 and all(c.passed for c in checks.values()), checks

    report = instance.get_latest_materialization_event(
        dg.AssetKey(["ridehail", "evaluation_reports", "driver_churn"])
    ).asset_materialization.metadata
    assert report["metrics"].value["roc_auc"] > 0.65  # the generator plants real signal
    assert report["passes_thresholds"].value is True
    for plot in ("plot_roc_curve", "plot_precision_recall", "plot_calibration"):
        assert (
            report[plot].value.startswith("![") and "data:image/png;base64," in report[plot].value
        )
    assert report["cost/usd"].value > 0

    # MLflow holds the registered version with its lineage tags.
    mlflow = defs.resources["mlflow"]
    version = mlflow.client().get_model_version("ridehail.driver_churn", "1")
    assert version.tags["asset_key"] == "ridehail/models/driver_churn"
    assert version.tags["tenant"] == "ridehail"
    assert version.tags["dagster_run_id"] == result.run_id
    training = instance.get_latest_materialization_event(
        dg.AssetKey(["ridehail", "training_sets", "driver_churn"])
    ).asset_materialization
    assert version.tags["training_set_version"] == training.metadata["data_version"].value

    # Feast holds the versioned FeatureService and the views, in the tenant's own project.
    store = defs.resources["feast"].store("ridehail")
    service = store.get_feature_service("driver_churn_v1")
    assert {p.name for p in service.feature_view_projections} == {"driver_stats", "zone_demand"}

    # The lineage the UI draws: sources -> features -> training set -> model -> report.
    graph = defs.get_repository_def().asset_graph
    key = dg.AssetKey.from_user_string
    assert (
        key("ridehail/features/driver_stats")
        in graph.get(key("ridehail/training_sets/driver_churn")).parent_keys
    )
    assert (
        key("ridehail/models/driver_churn")
        in graph.get(key("ridehail/evaluation_reports/driver_churn")).parent_keys
    )


def test_evaluation_refuses_a_version_replaced_in_mlflow(ridehail):
    """The model step records its artifact's hash; an artifact changed in MLflow afterwards
    (here: another model's skops file over this version's) fails the evaluation step, naming
    the version and both hashes, and no report is written."""
    import skops.io
    from sklearn.dummy import DummyClassifier

    from bench.served_tenant import artifact_folder

    _, build, instance = ridehail
    defs = build()
    model_key = dg.AssetKey(["ridehail", "models", "driver_churn"])
    eval_key = dg.AssetKey(["ridehail", "evaluation_reports", "driver_churn"])
    assert _run(defs, instance).success
    recorded = (
        instance.get_latest_materialization_event(model_key)
        .asset_materialization.metadata["artifact_sha256"]
        .value
    )
    folder = artifact_folder(defs.resources["mlflow"], "ridehail.driver_churn", 1)
    (folder / "model.skops").write_bytes(
        skops.io.dumps(DummyClassifier(strategy="prior").fit([[0.0]], [1]))
    )
    actual = artifact_digest(folder)
    reports = instance.fetch_materializations(eval_key, limit=10).records
    result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(
        instance=instance, asset_selection=[eval_key], raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.error.cause.message == (
        "platform_assets.models.artifacts.ArtifactRefused: ridehail.driver_churn v1: artifact "
        f"refused: its files hash to sha256 {actual[:12]}..., not the {recorded[:12]}... the "
        "platform recorded when it registered the version (changed in MLflow since); not "
        "loaded\n"
    )
    assert instance.fetch_materializations(eval_key, limit=10).records == reports

    # A model event reported by hand (runless) naming the swapped files' hash vouches for nothing.
    instance.report_runless_asset_event(
        dg.AssetMaterialization(model_key, metadata={"model_version": 1, "artifact_sha256": actual})
    )
    result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(
        instance=instance, asset_selection=[eval_key], raise_on_error=False
    )
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.error.cause.message == (
        "RuntimeError: the latest materialization of ridehail/models/driver_churn was reported "
        "outside a run; only the model step's own materialization names what to evaluate "
        "(materialize the model)\n"
    )
    assert instance.fetch_materializations(eval_key, limit=10).records == reports


def expect_fares_below_5(root: Path) -> None:
    """Add an expectation that the generated trips (fares of 16 on average) always fail."""
    path = root / "ridehail" / "sources" / "trips" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["expectations"].append(
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "fare", "min_value": 0, "max_value": 5},
        }
    )
    path.write_text(yaml.safe_dump(doc))


def test_failed_expectation_stops_downstream(ridehail):
    root, build, instance = ridehail
    expect_fares_below_5(root)
    result = _run(build(), instance)
    assert not result.success
    check = _checks(result)["ridehail/sources/trips:expectations"]
    assert not check.passed
    assert "1 of 6 expectations failed" in check.description
    assert "expect_column_values_to_be_between(column=fare, max_value=5, min_value=0)" in (
        check.description
    )
    failed = check.metadata["failed_expectations"].value
    assert failed[0]["unexpected_count"] > 0 and failed[0]["sample_rows"]
    materialized = _materialized(result)
    assert "ridehail/features/driver_stats" not in materialized
    assert "ridehail/models/driver_churn" not in materialized


def trips_from_inbox(root: Path, platform_home: Path) -> Path:
    """ridehail's trips read from a parquet file of the generated rows in its inbox (a file
    source reads from the tenant's inbox in the lake, by a path relative to it)."""
    trips = platform_home / "data" / "lake" / "ridehail" / "inbox" / "trips.parquet"
    trips.parent.mkdir(parents=True)
    generate("ridehail.trips").to_parquet(trips)
    path = root / "ridehail" / "sources" / "trips" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["attributes"]["generator"]
    doc["attributes"]["path"] = "trips.parquet"
    path.write_text(yaml.safe_dump(doc))
    return trips


def test_source_missing_declared_column_keeps_downstream_intact(ridehail, platform_home):
    root, build, instance = ridehail
    trips = trips_from_inbox(root, platform_home)
    defs = build()
    assert _run(defs, instance).success
    lake = defs.resources["lake"]
    features = lake.current("ridehail", "features", "driver_stats")
    training = lake.current("ridehail", "training_sets", "driver_churn")
    before = (_digest(Path(features.uri)), _digest(Path(training.uri)))

    pd.read_parquet(trips).drop(columns=["rating"]).to_parquet(trips)
    result = _run(defs, instance)
    assert not result.success
    check = _checks(result)["ridehail/sources/trips:schema"]
    assert not check.passed
    assert "column 'rating' is missing" in check.description
    assert lake.current("ridehail", "features", "driver_stats") == features
    assert lake.current("ridehail", "training_sets", "driver_churn") == training
    assert (_digest(Path(features.uri)), _digest(Path(training.uri))) == before
    versions = (
        defs.resources["mlflow"].client().search_model_versions("name='ridehail.driver_churn'")
    )
    assert len(versions) == 1  # no model was trained on the broken source


def test_leaked_training_set_fails_leakage_check(ridehail, monkeypatch):
    root, build, instance = ridehail
    from feast import FeatureStore

    original = FeatureStore.get_historical_features

    class Leaky:
        def __init__(self, job):
            self.job = job

        def to_df(self):
            df = self.job.to_df()
            # Simulate a store that joins a feature row from after the label time.
            df.loc[df.index[:7], "driver_stats_ts"] = df["event_timestamp"].iloc[:7] + pd.Timedelta(
                days=2
            )
            return df

    monkeypatch.setattr(
        FeatureStore,
        "get_historical_features",
        lambda self, *a, **kw: Leaky(original(self, *a, **kw)),
    )
    result = _run(build(), instance)
    assert not result.success
    check = _checks(result)["ridehail/training_sets/driver_churn:leakage"]
    assert not check.passed
    assert "driver_stats_ts: 7 rows" in check.description
    assert "ridehail/models/driver_churn" not in _materialized(result)


def test_automation_builds_only_on_changed_data_whose_blocking_checks_passed(
    ridehail, platform_home
):
    root, build, instance = ridehail
    trips = trips_from_inbox(root, platform_home)
    # Unscheduled, the feature view follows its source's changes (a schedule would also hold it
    # to its cron's ticks: tests/tenancy/test_automation.py).
    stats = root / "ridehail" / "features" / "driver_stats" / "defs.yaml"
    doc = yaml.safe_load(stats.read_text())
    del doc["attributes"]["schedule"]
    stats.write_text(yaml.safe_dump(doc))
    defs = build()
    assert _run(defs, instance).success
    features = dg.AssetKey(["ridehail", "features", "driver_stats"])
    # Every evaluation at one time, so no tick of the demo's schedules falls between two.
    noon = datetime(2026, 1, 6, 12, tzinfo=UTC)

    def evaluate(defs: dg.Definitions, cursor=None):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=cursor, evaluation_time=noon
        )

    first = evaluate(defs)

    def refresh_trips(defs: dg.Definitions) -> None:
        defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[TRIPS], raise_on_error=False
        )

    # The same file read again: the same snapshot version, so nothing downstream rebuilds.
    refresh_trips(defs)
    same = evaluate(defs, first.cursor)
    assert same.total_requested == 0

    # New trips whose checks pass: the feature views are requested.
    pd.read_parquet(trips).iloc[:-500].to_parquet(trips)
    refresh_trips(defs)
    passing = evaluate(defs, same.cursor)
    assert passing.get_num_requested(features) == 1

    # A fresh source whose blocking check fails: nothing downstream is requested.
    expect_fares_below_5(root)
    from platform_assets.tenancy import catalog

    catalog.load_tenant.cache_clear()
    failing_defs = build()
    pd.read_parquet(trips).iloc[:-500].to_parquet(trips)
    refresh_trips(failing_defs)
    failing = evaluate(failing_defs, passing.cursor)
    assert failing.get_num_requested(features) == 0
