"""The demo's ridehail tenant trains `driver_churn_lgbm` with its own code (LightGBM with a
focal loss, from code/ and its uv.lock) in the bubblewrap sandbox: the whole pipeline runs in
process on real DuckDB, Feast, MLflow and GX; the platform evaluates the model itself, promotes
it through the real governance workflow, and `mlplat serve` serves it from LightGBM's text model
through Treelite."""

from __future__ import annotations

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from platform_assets.governance.identity import SENSOR_IDENTITY, Identity
from platform_assets.governance.workflow import Governance, open_store
from platform_assets.models.trainers.job import TrainerFailed
from platform_assets.models.trainers.sandbox import check_sandbox
from platform_assets.serving.app import Service, create_app
from platform_assets.serving.requestlog import RequestLog
from platform_assets.serving.spool import Spool
from platform_assets.tenancy.catalog import load_all
from tests.conftest import skip_or_fail
from tests.platform_sandbox import sandbox

pytestmark = pytest.mark.materialize
MODEL = "ridehail.driver_churn_lgbm"
MODEL_KEY = dg.AssetKey(["ridehail", "models", "driver_churn_lgbm"])
EVAL_KEY = dg.AssetKey(["ridehail", "evaluation_reports", "driver_churn_lgbm"])
APPROVER = "rita@ridehail.example"


@pytest.fixture
def trained(monkeypatch, platform_home, instance):
    try:
        check_sandbox()
    except TrainerFailed as exc:
        skip_or_fail(str(exc))
    with sandbox(monkeypatch, trainers=True) as (_, build):
        defs = build()
        result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(
            instance=instance, raise_on_error=False
        )
        yield defs, instance, result


def test_a_team_trainer_is_trained_evaluated_promoted_and_served(trained, tmp_path):
    defs, instance, result = trained
    assert result.success
    model = instance.get_latest_materialization_event(MODEL_KEY).asset_materialization.metadata
    assert model["features"].value and model["artifact_sha256"].value
    # The team's own number, shown apart; the sandbox's use measured.
    assert set(model["team_reported"].value["metadata"]) == {"train_focal_loss"}
    assert model["trainer/wall_seconds"].value > 0
    assert model["cost/usd"].value > 0
    # The team's log lines reached the step's log, marked as theirs.
    logs = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.step_key and "driver_churn_lgbm" in e.step_key and e.message
    ]
    assert any(m.startswith("[ridehail trainer] focal loss (alpha 0.5, gamma 2.0)") for m in logs)
    # Reported through Pipes, never a materialization of its own: one per run, the step's.
    assert len(instance.fetch_materializations(MODEL_KEY, limit=10).records) == 1

    # Evaluated by the platform on the held-out split, like any built-in.
    report = instance.get_latest_materialization_event(EVAL_KEY).asset_materialization.metadata
    assert report["metrics"].value["roc_auc"] > 0.65
    assert report["passes_thresholds"].value is True

    # Promoted through the real workflow, from the platform's own records.
    store = open_store()
    try:
        governance = Governance(store, defs.resources["mlflow"], instance=instance, admins=[])
        governance.propose(MODEL, 1, Identity(SENSOR_IDENTITY, "platform"))
        outcome = governance.approve(MODEL, 1, APPROVER)
        assert outcome.champion == 1, outcome.message

        # Served from LightGBM's text model, compiled by Treelite with the logistic link.
        service = Service(
            {"ridehail": load_all()["ridehail"]},
            defs.resources["feast"],
            defs.resources["mlflow"],
            store,
            RequestLog(defs.resources["lake"], Spool(tmp_path / "spool", 64 << 20), 1000, 60),
            champion_ttl=60.0,
        )
        with TestClient(create_app(service)) as client:
            ready = client.get("/readyz").json()["models"][MODEL]
            assert (ready["serving_version"], ready["runtime"]) == (1, "treelite"), ready
            lake = defs.resources["lake"]
            driver = lake.read("ridehail", "features", "driver_stats").to_pandas()["driver_id"][0]
            zone = lake.read("ridehail", "features", "zone_demand").to_pandas()["zone_id"][0]
            answer = client.post(
                f"/v1/models/{MODEL}:predict",
                json={"entities": [{"driver_id": driver, "zone_id": zone}]},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == 1
            [score] = answer.json()["predictions"]
            assert 0 < score < 1
    finally:
        store.dispose()
