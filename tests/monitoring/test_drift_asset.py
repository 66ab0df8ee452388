"""The drift asset materialized in-process on a temp lake and registry, with a request log
written in the agreed format: stable data passes, a shifted feature, a drifted score and a rise
of missing values fail their checks by name, with the YAML's severity."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from platform_assets.monitoring.assets import PREDICTION_CHECK, drift_asset
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.specs import Monitoring
from tests.monitoring.conftest import FEATURES, Monitored, feature_frame

pytestmark = pytest.mark.materialize


def run(m: Monitored, monitoring: Monitoring | None = None, blocked: bool = False):
    """Materialize the drift asset; `blocked`: a blocking check fails (Dagster fails the step
    after recording the materialization and every check's result)."""
    spec = m.spec if monitoring is None else m.spec.model_copy(update={"monitoring": monitoring})
    asset = drift_asset(m.catalog.tenant, spec, m.resolved, m.catalog.tenant.resources)
    result = dg.materialize(
        [asset],
        resources={"lake": m.lake, "mlflow": m.sb.mlflow, "pricing": PricingResource()},
        instance=m.sb.instance,
        raise_on_error=False,
    )
    assert result.success is not blocked
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    (mat,) = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    return checks, mat.step_materialization_data.materialization.metadata


def failed(checks) -> set[str]:
    return {name for name, c in checks.items() if not c.passed}


def test_same_distribution_passes_every_check(monitored):
    monitored.request_log(feature_frame(np.random.default_rng(1), 3000))
    checks, md = run(monitored)
    assert set(checks) == {*(f"drift_{f}" for f in FEATURES), PREDICTION_CHECK}
    assert failed(checks) == set(), {n: c.description for n, c in checks.items()}
    assert md["recent_from"].value == "request_log" and md["recent_rows"].value == 3000
    assert md["reference"].value == (
        f"the training set v{monitored.champion} was trained on, @{monitored.training_set_version}"
    )
    assert "data:image/png;base64," in md["plot_psi"].value
    plot = checks["drift_card_txns_7d"].metadata["plot"].value
    assert plot.startswith("![card_txns_7d: training set vs recent](data:image/png;base64,")
    # The statistics are kept in the lake, one row per feature and one for the score.
    table = monitored.lake.read("payments", "drift", "fraud_detector").to_pandas()
    assert list(table["column"]) == [*FEATURES, "score"]


def test_a_shifted_feature_fails_its_own_check_naming_it(monitored):
    features = feature_frame(np.random.default_rng(2), 3000)
    features["card_night_share_7d"] = np.clip(features["card_night_share_7d"] + 0.3, 0, 1)
    monitored.request_log(features)
    checks, md = run(monitored)
    # The other features pass; the score moves with the feature the model weighs.
    assert failed(checks) - {PREDICTION_CHECK} == {"drift_card_night_share_7d"}
    check = checks["drift_card_night_share_7d"]
    assert check.description.startswith("card_night_share_7d: PSI ")
    assert "KS" in check.description
    assert check.severity == dg.AssetCheckSeverity.WARN  # the default severity
    assert "drift_card_night_share_7d" in md["drifted_checks"].value


def test_drifted_scores_fail_the_prediction_check(monitored):
    features = feature_frame(np.random.default_rng(3), 3000)
    scores = monitored.model.predict_proba(features[list(FEATURES)])[:, 1]
    monitored.request_log(features, predictions=np.clip(scores + 0.25, 0, 1))
    blocking = Monitoring.model_validate({"severity": {"prediction": "block"}})
    checks, _ = run(monitored, blocking, blocked=True)
    assert failed(checks) == {PREDICTION_CHECK}
    assert checks[PREDICTION_CHECK].description.startswith("score: PSI ")
    assert checks[PREDICTION_CHECK].severity == dg.AssetCheckSeverity.ERROR


def test_a_rise_of_missing_values_fails_by_its_share(monitored):
    features = feature_frame(np.random.default_rng(4), 3000)
    features.loc[features.index[:900], "merchant_decline_rate_7d"] = np.nan
    monitored.request_log(features)
    checks, _ = run(monitored)
    assert failed(checks) == {"drift_merchant_decline_rate_7d"}
    check = checks["drift_merchant_decline_rate_7d"]
    assert check.description == "merchant_decline_rate_7d: missing share rise 0.3000 > 0.05"
    assert check.metadata["missing_current"].value == pytest.approx(0.3)
    # Raised above the rise, the threshold lets it pass.
    checks, _ = run(monitored, Monitoring.model_validate({"thresholds": {"missing": 0.5}}))
    assert failed(checks) == set()


def test_without_enough_logged_requests_the_batch_scores_stand_in(monitored):
    rng = np.random.default_rng(5)
    # Too few recent requests, others out of the window or of another version.
    monitored.request_log(feature_frame(rng, 20))
    monitored.request_log(feature_frame(rng, 500), ago_days=30)
    monitored.request_log(feature_frame(rng, 500), version=monitored.champion + 1)
    features = feature_frame(rng, 2000)
    features["card_avg_amount_7d"] *= 2
    batch = features.assign(
        card_id=[f"c{i}" for i in range(2000)],
        merchant_id="m1",
        event_timestamp=pd.Timestamp("2026-03-01", tz="UTC"),
        score=monitored.model.predict_proba(features[list(FEATURES)])[:, 1],
        model_version=monitored.champion,
    )
    monitored.lake.write("payments", "predictions", "fraud_detector", pa.Table.from_pandas(batch))
    checks, md = run(monitored)
    assert md["recent_from"].value == "batch_scores" and md["recent_rows"].value == 2000
    assert "drift_card_avg_amount_7d" in failed(checks)


def test_a_champion_replaced_in_mlflow_is_refused_and_no_drift_is_computed(monitored):
    m = monitored
    m.request_log(feature_frame(np.random.default_rng(1), 3000))
    refusal = m.replace_artifact()
    asset = drift_asset(m.catalog.tenant, m.spec, m.resolved, m.catalog.tenant.resources)
    message = m.refused(asset)
    assert message == f"platform_assets.models.artifacts.ArtifactRefused: {refusal}\n"


def test_no_champion_no_drift(gov_sandbox):
    from platform_assets.resources.lake import LakeResource
    from platform_assets.tenancy.catalog import check_model_refs

    catalog = gov_sandbox.catalogs["payments"]
    spec = catalog.models["fraud_detector"]
    asset = drift_asset(
        catalog.tenant, spec, check_model_refs(catalog, spec), catalog.tenant.resources
    )
    lake = LakeResource(root=str(gov_sandbox.deploy_dir.parent / "lake"))
    result = dg.materialize(
        [asset],
        resources={"lake": lake, "mlflow": gov_sandbox.mlflow, "pricing": PricingResource()},
        instance=gov_sandbox.instance,
    )
    assert result.success and result.get_asset_materialization_events() == []
