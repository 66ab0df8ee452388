"""A tenant's model trained with the built-in `xgboost` or `lightgbm` algorithm through its real
assets (ridehail's pipeline in a temp dir, the model YAML naming the booster): registered in
MLflow in its native format with no pickle anywhere, evaluated, batch-scored and watched for
drift from that format, and served through Treelite with the booster's own scores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from bench.served_tenant import MODEL, REGISTERED, TENANT, Served, served_tenant
from platform_assets.models.flavors import BoosterModel, load_verified
from platform_assets.monitoring.assets import PREDICTION, drift_asset
from platform_assets.monitoring.batch_scores import batch_scores_asset
from platform_assets.tenancy.catalog import check_model_refs
from tests.serving.test_app import URL, client, sdk_features

pytestmark = pytest.mark.materialize
ALGORITHMS = {
    "xgboost": {"n_estimators": 80, "max_depth": 3, "learning_rate": 0.1},
    "lightgbm": {"n_estimators": 80, "num_leaves": 15, "learning_rate": 0.1},
}
NATIVE_FILE = {"xgboost": "model.json", "lightgbm": "model.lgb"}
PICKLES = (".pkl", ".pickle", ".joblib", ".skops", ".cloudpickle")


def champion(served: Served) -> BoosterModel:
    """Version 1 as every platform load reads it: verified against the recorded hash."""
    return load_verified(served.resources["mlflow"], REGISTERED, 1, served.artifacts[1])


@pytest.fixture(scope="module", params=list(ALGORITHMS))
def booster(request, tmp_path_factory) -> Iterator[tuple[str, Served]]:
    algorithm = request.param
    with (
        pytest.MonkeyPatch.context() as mp,
        served_tenant(
            tmp_path_factory.mktemp(algorithm), mp, algorithm=(algorithm, ALGORITHMS[algorithm])
        ) as served,
    ):
        yield algorithm, served


def test_registered_in_its_native_format_and_evaluated(booster):
    algorithm, served = booster
    mlflow = served.resources["mlflow"]
    version = mlflow.client().get_model_version(REGISTERED, "1")
    # The evaluation step scored the held-out rows with the model loaded from MLflow.
    assert float(version.tags["eval_roc_auc"]) > 0.6
    assert version.tags["passes_thresholds"] in ("true", "false")
    params = mlflow.client().get_run(version.run_id).data.params
    assert params["algorithm"] == algorithm and params["n_estimators"] == "80"

    files = [p for p in Path(mlflow.artifact_root).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert NATIVE_FILE[algorithm] in names, names
    assert not [p for p in files if p.name.endswith(PICKLES)]
    # No file of any name holds a pickle stream (protocol 2 and later open with 0x80).
    assert not [p for p in files if p.read_bytes()[:1] == b"\x80"]
    model = champion(served)
    assert isinstance(model, BoosterModel) and model.flavor == algorithm


def test_batch_scores_and_drift_use_the_native_model(booster):
    algorithm, served = booster
    catalog = served.catalogs[TENANT]
    spec = catalog.models[MODEL]
    resolved = check_model_refs(catalog, spec)
    assets = [
        batch_scores_asset(catalog.tenant, spec, resolved, catalog.tenant.resources),
        drift_asset(catalog.tenant, spec, resolved, catalog.tenant.resources),
    ]
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, resources=served.resources, instance=instance)
    assert result.success
    lake = served.resources["lake"]
    scores = lake.read(TENANT, "predictions", MODEL).to_pandas()
    model = champion(served)
    features = scores[list(model.feature_names_in_)]
    assert len(scores) > 0 and (scores["model_version"] == 1).all()
    np.testing.assert_array_equal(scores["score"], model.predict_proba(features)[:, 1])
    drift = lake.read(TENANT, "drift", MODEL).to_pandas()
    # Every feature and the score, the training set's scored by the model loaded natively.
    assert set(drift["column"]) == {*model.feature_names_in_, PREDICTION}


def test_served_through_treelite_with_the_boosters_scores(booster):
    algorithm, served = booster
    entities = served.entities(20)
    model = champion(served)
    features = sdk_features(served, entities)[list(model.feature_names_in_)]
    native = model.predict_proba(features.astype("float64"))[:, 1]
    with client(served) as (c, _):
        ready = c.get("/readyz").json()["models"][REGISTERED]
        assert ready["status"] == "serving" and ready["runtime"] == "treelite", ready
        response = c.post(URL, json={"entities": entities})
    assert response.status_code == 200, response.text
    served_scores = np.array(response.json()["predictions"])
    assert np.max(np.abs(served_scores - native)) <= 1e-6
