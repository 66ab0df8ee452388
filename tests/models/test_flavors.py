"""The built-in XGBoost and LightGBM models: trained reproducibly, logged to MLflow in their
native formats (never a pickle), loaded back from them, and compiled by Treelite for serving."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from platform_assets.models.artifacts import ArtifactRefused
from platform_assets.models.flavors import (
    LOADERS,
    BoosterModel,
    fit,
    load_folder,
    log_model,
    record_logged,
)
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.serving.runtime import BOOSTER_TOLERANCE, scorer, split_rows
from tests.serving.test_runtime import COLUMNS, training_set

BOOSTERS = ["xgboost", "lightgbm"]
NATIVE_FILE = {"xgboost": "model.json", "lightgbm": "model.lgb"}


def native_bytes(model: BoosterModel) -> bytes:
    if model.flavor == "xgboost":
        return bytes(model.booster.save_raw("json"))
    return model.booster.model_to_string().encode()


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory) -> MlflowResource:
    root = tmp_path_factory.mktemp("mlflow")
    resource = MlflowResource(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "artifacts")
    )
    resource.client()
    return resource


def logged(mlflow: MlflowResource, model: BoosterModel, X: pd.DataFrame) -> str:
    """Log `model` as the model step does, its hash recorded as the step records it (which
    loads it back and checks its scores); its `models:/` URI."""
    import mlflow as mlflow_lib

    mlflow.client()
    mlflow_lib.set_experiment(experiment_id=mlflow.ensure_experiment(f"flavors-{model.flavor}"))
    with mlflow_lib.start_run():
        info = log_model(model, X)
    record_logged(mlflow, info.model_id, model, X, f"flavors-{model.flavor}")
    return f"models:/{info.model_id}"


def local_copy(uri: str, tmp_path: Path) -> Path:
    import mlflow as mlflow_lib

    local = tmp_path / "model"
    shutil.copytree(mlflow_lib.artifacts.download_artifacts(artifact_uri=uri), local)
    return local


@pytest.mark.parametrize("algorithm", BOOSTERS)
def test_the_same_training_set_gives_the_same_model(algorithm):
    X, y = training_set()
    params = {"n_estimators": 30, "max_depth": 4, "colsample_bytree": 0.7}
    first, second = fit(algorithm, params, X, y), fit(algorithm, params, X, y)
    assert isinstance(first, BoosterModel) and first.flavor == algorithm
    assert first.feature_names_in_ == tuple(COLUMNS)
    assert native_bytes(first) == native_bytes(second)


@pytest.mark.parametrize("algorithm", BOOSTERS)
def test_logged_natively_and_loaded_without_pickle(algorithm, mlflow):
    X, y = training_set()
    model = fit(algorithm, {"n_estimators": 40}, X, y)
    uri = logged(mlflow, model, X)
    import mlflow as mlflow_lib

    local = Path(mlflow_lib.artifacts.download_artifacts(artifact_uri=uri))
    files = sorted(p.name for p in local.rglob("*") if p.is_file())
    assert NATIVE_FILE[algorithm] in files, files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".skops", ".joblib"))], files
    for path in local.rglob("*"):  # no file holds a pickle stream (protocol 2+ opcode)
        assert not (path.is_file() and path.read_bytes()[:1] == b"\x80"), path
    loaded = load_folder(local, "t.m v1")
    assert isinstance(loaded, BoosterModel) and loaded.feature_names_in_ == tuple(COLUMNS)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert native_bytes(loaded) == native_bytes(model)


@pytest.mark.parametrize("algorithm", BOOSTERS)
def test_the_mlmodel_does_not_choose_the_loader(algorithm, mlflow, tmp_path):
    X, y = training_set(500)
    model = fit(algorithm, {"n_estimators": 5}, X, y)
    local = local_copy(logged(mlflow, model, X), tmp_path)
    # A writer to the store makes the MLmodel say "a pickled scikit-learn model": not read.
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    mlmodel["flavors"] = {"sklearn": {"pickled_model": NATIVE_FILE[algorithm]}}
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    loaded = load_folder(local, "t.m v2")
    assert isinstance(loaded, BoosterModel) and loaded.flavor == algorithm
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_folder_with_two_model_files_is_refused(mlflow, tmp_path):
    X, y = training_set(500)
    local = local_copy(logged(mlflow, fit("xgboost", {"n_estimators": 5}, X, y), X), tmp_path)
    (local / "model.skops").write_bytes(b"")
    held = ", ".join(sorted(p.name for p in local.iterdir()))
    with pytest.raises(ArtifactRefused) as refused:
        load_folder(local, "t.m v3")
    assert str(refused.value) == (
        f"t.m v3: the artifact holds {held}; the platform loads exactly one of "
        f"{', '.join(LOADERS)} (never a pickle)"
    )
    assert "model.json" in held and "model.skops" in held


def test_an_xgboost_model_in_another_format_is_refused(mlflow, tmp_path):
    X, y = training_set(500)
    local = local_copy(logged(mlflow, fit("xgboost", {"n_estimators": 5}, X, y), X), tmp_path)
    (local / "model.json").rename(local / "model.xgb")  # XGBoost's deprecated binary format
    held = ", ".join(sorted(p.name for p in local.iterdir()))
    with pytest.raises(ArtifactRefused) as refused:
        load_folder(local, "t.m v4")
    assert str(refused.value) == (
        f"t.m v4: the artifact holds {held}; the platform loads exactly one of "
        "model.skops, model.json, model.ubj, model.lgb, model.onnx (never a pickle)"
    )


@pytest.mark.parametrize("algorithm", BOOSTERS)
def test_a_booster_file_that_is_not_a_model_is_refused(algorithm, mlflow, tmp_path):
    X, y = training_set(500)
    local = local_copy(logged(mlflow, fit(algorithm, {"n_estimators": 5}, X, y), X), tmp_path)
    (local / NATIVE_FILE[algorithm]).write_text("not a model")
    with pytest.raises(ArtifactRefused) as refused:
        load_folder(local, "t.m v5")
    name = {"xgboost": "an XGBoost", "lightgbm": "a LightGBM"}[algorithm]
    assert str(refused.value).startswith(f"t.m v5: {NATIVE_FILE[algorithm]} is not {name} model (")


@pytest.mark.parametrize("algorithm", BOOSTERS)
def test_served_through_treelite_as_the_library_scores(algorithm):
    import treelite

    X, y = training_set()
    model = fit(algorithm, {"n_estimators": 60}, X, y)
    scoring = scorer(model, COLUMNS)
    assert scoring.runtime == "treelite", scoring.note
    assert scoring.note.startswith(f"{algorithm} booster compiled; agrees with {algorithm}")
    frontend = getattr(treelite.frontend, f"from_{algorithm}")
    rows = np.vstack([X.to_numpy(), split_rows(frontend(model.booster), len(COLUMNS))])
    gap = np.max(np.abs(scoring.predict(rows) - model.predict(rows)))
    assert gap <= BOOSTER_TOLERANCE[algorithm] <= 1e-6
    one = rows[:1]
    assert scoring.predict(one)[0] == pytest.approx(model.predict(one)[0], abs=1e-6)


def test_a_booster_whose_compiled_scores_disagree_is_scored_by_its_library(monkeypatch):
    import treelite.gtil

    real = treelite.gtil.predict
    monkeypatch.setattr(treelite.gtil, "predict", lambda *a, **kw: real(*a, **kw) + 1e-3)
    X, y = training_set(500)
    model = fit("lightgbm", {"n_estimators": 5}, X, y)
    scoring = scorer(model, COLUMNS)
    assert scoring.runtime == "lightgbm"
    assert scoring.note.startswith("Treelite's scores differ from lightgbm's by up to 0.001")
    np.testing.assert_array_equal(scoring.predict(X.to_numpy()), model.predict(X.to_numpy()))


def test_scoring_other_columns_is_refused():
    X, y = training_set(500)
    model = fit("xgboost", {"n_estimators": 5}, X, y)
    with pytest.raises(ValueError, match="trained on features f0, f1, f2, f3, f4, f5, not f1, f0"):
        model.predict_proba(X[["f1", "f0"]])
