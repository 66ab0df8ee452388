"""Tenants' `slos:`: strict YAML, Dagster freshness policies on the assets, stale time against a
brute-force reference, and the SLO report asset on a real instance."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from platform_assets.composition.locations import tenant_assets, tenant_location
from platform_assets.observability.slo import (
    SLO_REPORT_KEY,
    freshness_policies,
    slo_report_asset,
    stale_seconds,
)
from platform_assets.tenancy.catalog import PlatformConfigError, load_all, load_tenant
from platform_assets.tenancy.locations import location_named
from tests.observability.conftest import LABELS, TRIPS, materialize
from tests.platform_sandbox import launch_from, sandbox

FILE = "ridehail/tenant/defs.yaml"


def _slo_error(monkeypatch, slos: dict) -> str:
    """The error loading ridehail with `slos` as its tenant's SLOs."""
    with sandbox(monkeypatch) as (root, _):
        path = root / FILE
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["slos"] = slos
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(PlatformConfigError) as excinfo:
            load_tenant((root / "ridehail").resolve())
        return str(excinfo.value)


def _fresh(**fields) -> dict:
    return {"freshness": {"feature_view": {"fail_after_hours": 26, **fields}}}


@pytest.mark.parametrize(
    ("slos", "field", "reason"),
    [
        (
            {"run_success": {"target": 1}},
            "attributes.slos.run_success.target",
            "Input should be less than 1",
        ),
        (
            {"run_success": {"target": 0.9, "window_days": 365}},
            "attributes.slos.run_success.window_days",
            "Input should be less than or equal to 90",
        ),
        (
            _fresh(target=float("nan")),
            "attributes.slos.freshness.feature_view.target",
            "nan is not a finite number",
        ),
        (
            {"freshness": {"feature_view": {"fail_after_hours": 0}}},
            "attributes.slos.freshness.feature_view.fail_after_hours",
            "Input should be greater than or equal to 0.016",
        ),
        (
            {"freshness": {"feature_view": {"fail_after_hours": "soon"}}},
            "attributes.slos.freshness.feature_view.fail_after_hours",
            "Input should be a valid number",
        ),
        (
            _fresh(warn_after_hours=30),
            "attributes.slos.freshness.feature_view",
            "warn_after_hours (30) must be below fail_after_hours (26)",
        ),
        (
            {"freshness": {"cost": {"fail_after_hours": 26}}},
            "attributes.slos.freshness",
            "'cost' is not an asset type with a freshness SLO: use one of source, feature_view, "
            "training_set, model",
        ),
        (
            {"freshness": {"feature_view": {}}},
            "attributes.slos.freshness.feature_view.fail_after_hours",
            "Field required",
        ),
        (
            {"latency": {"p99_ms": 50}},
            "attributes.slos.latency",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_bad_slos_are_refused_naming_file_and_field(monkeypatch, slos, field, reason):
    message = _slo_error(monkeypatch, slos)
    assert f"{FILE}: {field}: {reason}" in message


def test_tenant_yaml_without_slos_keeps_loading(monkeypatch):
    with sandbox(monkeypatch) as (root, _):
        path = root / FILE
        doc = yaml.safe_load(path.read_text())
        del doc["attributes"]["slos"]
        path.write_text(yaml.safe_dump(doc))
        catalog = load_tenant((root / "ridehail").resolve())
    assert catalog.tenant.slos.run_success.target == 0.95
    assert catalog.tenant.slos.freshness == {}
    assert freshness_policies(catalog, tenant_assets) == {}


def test_freshness_slos_are_dagster_freshness_policies_on_the_assets():
    graph = tenant_location(location_named("ridehail")).resolve_asset_graph()
    policies = {
        key.to_user_string(): graph.get(key).freshness_policy
        for key in graph.get_all_asset_keys()
        if graph.get(key).freshness_policy is not None
    }
    assert set(policies) == {
        "ridehail/features/driver_stats",
        "ridehail/features/zone_demand",
        "ridehail/models/driver_churn",
        "ridehail/models/driver_churn_lgbm",  # trained by the team's code: the same SLO
    }
    feature = policies["ridehail/features/driver_stats"]
    assert feature.fail_window.to_timedelta().total_seconds() == 26 * 3600
    assert feature.warn_window.to_timedelta().total_seconds() == 24 * 3600
    assert policies["ridehail/models/driver_churn"].warn_window is None
    # The exporter and the report read the same policies from the same definitions.
    found = freshness_policies(load_all()["ridehail"], tenant_assets)
    assert {k.to_user_string() for k in found} == set(policies)


def _brute_stale(materialized, before, start, end, fail_after) -> int:
    """Stale seconds by looking at the middle of every second of the window: with whole-second
    timestamps each second is stale or fresh all through, so the count is exact."""
    events = sorted(([before] if before is not None else []) + list(materialized))
    stale = 0
    for t in range(start, end):
        middle = t + 0.5
        last = max((e for e in events if e <= middle), default=None)
        stale += last is None or middle - last > fail_after
    return stale


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 599), max_size=8).map(sorted),
    st.one_of(st.none(), st.integers(-400, -1)),
    st.integers(1, 300),
)
def test_stale_seconds_matches_a_brute_force_walk(materialized, before, fail_after):
    start, end = 0, 600
    got = stale_seconds([float(t) for t in materialized], before, start, end, fail_after)
    assert got == pytest.approx(_brute_stale(materialized, before, start, end, fail_after))


@pytest.mark.materialize
def test_slo_report_computes_attainment_and_error_budget(ridehail, instance):
    root, defs = ridehail
    assert materialize(defs, instance, LABELS)
    assert not materialize(defs, instance, TRIPS)
    assert materialize(defs, instance, LABELS)
    result = dg.materialize([slo_report_asset(["ridehail"], tenant_assets)], instance=instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.asset_key == SLO_REPORT_KEY
    md = event.materialization.metadata
    report = md["report"].value
    # Two of three runs succeeded against a 95% target: the budget is overspent 6.7 times.
    row = next(line for line in report.splitlines() if "| run_success |" in line)
    assert "| 95.00% | 66.67% | -566.67% | 2 succeeded, 1 failed |" in row
    # The labels were materialized a moment ago, after 28 days without: stale almost all along.
    results = {r["slo"]: r for r in md["results"].value}
    fresh = results[f"freshness:{LABELS.to_user_string()}"]
    assert 0 <= fresh["attainment"] < 0.001
    assert fresh["target"] == 0.99 and fresh["error_budget_remaining"] < -98.9
    assert fresh["detail"].startswith("2 materializations")
    assert results[f"freshness:{TRIPS.to_user_string()}"]["attainment"] == 0  # never made
    assert results["run_success"]["attainment"] == pytest.approx(2 / 3)
    assert md["missed"].value >= 2
    assert md["plot"].value.startswith("![slo attainment](data:image/png;base64,")
    assert md["tenants_not_loaded"].value == "none"
    runs = instance.get_runs(dg.RunsFilter(tags={"tenant": "platform"}))
    assert len(runs) == 1  # the report's run is the platform's, not a tenant's


@pytest.mark.materialize
def test_slo_report_reports_a_tenant_whose_yaml_does_not_load(ridehail, instance):
    root, _ = ridehail
    path = root / FILE
    path.write_text(path.read_text().replace("target: 0.95", "target: 1.5"))
    load_tenant.cache_clear()  # the catalog is read once per process; this one changed since
    result = dg.materialize([slo_report_asset(["ridehail"], tenant_assets)], instance=instance)
    [event] = result.get_asset_materialization_events()
    md = event.materialization.metadata
    assert "ridehail: " in md["tenants_not_loaded"].value
    assert "attributes.slos.run_success.target" in md["tenants_not_loaded"].value
    assert md["slos"].value == 0
    assert "plot" not in md


def _run_success_row(report: str, tenant: str) -> str:
    return next(
        line for line in report.splitlines() if line.startswith(f"| {tenant} | run_success")
    )


@pytest.mark.materialize
def test_a_run_tagged_for_ridehail_from_growths_location_counts_for_growth(
    monkeypatch, platform_home, instance
):
    """growth's location launches a run claiming `tenant=ridehail`: its step refuses, and the
    failed run counts against growth's SLO, the location's tenant, never ridehail's."""
    with sandbox(monkeypatch, ("growth", "ridehail")) as (_, build):
        defs = build()
        events = defs.get_assets_def(dg.AssetKey(["growth", "sources", "events"]))
        run = launch_from("growth", [events], instance, defs.resources, {"tenant": "ridehail"})
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert run.tags["dagster/code_location"] == "growth"
        [failure] = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ).records
        message = failure.event_log_entry.dagster_event.step_failure_data.error.cause.message
        assert "is tenant 'ridehail''s; a step of tenant 'growth'" in message
        # A run no location launched (this process holding the instance) counts for no one.
        labels = defs.get_assets_def(LABELS)
        assert dg.materialize([labels], instance=instance, resources=defs.resources).success
        result = dg.materialize(
            [slo_report_asset(["growth", "ridehail"], tenant_assets)], instance=instance
        )
        report = result.get_asset_materialization_events()[0].materialization.metadata["report"]
        assert "| 0 succeeded, 1 failed |" in _run_success_row(report.value, "growth")
        assert "| n/a | n/a | 0 succeeded, 0 failed |" in _run_success_row(report.value, "ridehail")
