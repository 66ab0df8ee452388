"""Retraining on drift: a failed drift check of a model with `retrain_on_drift: true` makes the
tenant's sensor request the model's lineage from the tenant pipeline, once, with the reason."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from platform_assets.composition.locations import tenant_location
from platform_assets.monitoring.sensors import REASON_TAG
from platform_assets.tenancy.locations import location_named
from tests.monitoring.conftest import feature_frame
from tests.monitoring.test_drift_asset import run

pytestmark = pytest.mark.materialize


def tick(defs: dg.Definitions, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def("payments_drift_retrain")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
    ) as context:
        result = sensor(context)
        return result, context.cursor


def test_failed_drift_check_requests_the_models_lineage_once(monitored):
    defs = tenant_location(location_named("payments"))
    assert monitored.spec.monitoring.retrain_on_drift  # the demo YAML opts in
    sb = monitored.sb

    monitored.request_log(feature_frame(np.random.default_rng(1), 3000))
    run(monitored)  # every check passes: nothing to retrain
    result, cursor = tick(defs, sb.instance, None)
    assert isinstance(result, dg.SkipReason) and result.skip_message == "no new failed drift check"

    features = feature_frame(np.random.default_rng(2), 3000)
    features["card_night_share_7d"] = np.clip(features["card_night_share_7d"] + 0.3, 0, 1)
    monitored.request_log(features)
    run(monitored)
    (request,), cursor = tick(defs, sb.instance, cursor)
    assert request.job_name is None  # the sensor's own job: the tenant pipeline
    assert defs.resolve_sensor_def("payments_drift_retrain").job_name == "payments_pipeline"
    selected = {k.to_user_string() for k in request.asset_selection}
    assert {
        "payments/sources/fraud_labels",
        "payments/sources/transactions",
        "payments/features/card_activity",
        "payments/features/merchant_risk",
        "payments/training_sets/fraud_detector",
        "payments/models/fraud_detector",
        "payments/evaluation_reports/fraud_detector",
    } <= selected
    assert not any("/drift/" in k or "/predictions/" in k or "/cost" in k for k in selected)
    assert request.tags["tenant"] == "payments"
    assert request.tags[REASON_TAG].startswith(
        "drift of payments.fraud_detector: card_night_share_7d: PSI "
    )

    # The same failure is not requested twice.
    result, cursor = tick(defs, sb.instance, cursor)
    assert isinstance(result, dg.SkipReason)
