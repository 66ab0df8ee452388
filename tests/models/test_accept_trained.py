"""What a team's trainer returns is loaded by the platform from its flavor's safe format only,
and accepted only as a binary classifier of exactly the training set's features
(`flavors.accept_trained`). Models are made here with the libraries the platform itself has,
standing for what a trainer writes."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from platform_assets.models.artifacts import ArtifactRefused
from platform_assets.models.flavors import BoosterModel, OnnxModel, accept_trained, log_model
from platform_assets.models.trainers.job import ARTIFACT_FILES
from platform_assets.serving.runtime import scorer

FEATURES = ("a", "b", "c")
WHAT = "ridehail.retention (code/pyproject.toml)"


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=list(FEATURES))
    y = (X["a"] + rng.normal(scale=0.5, size=400) > 0).astype(int).to_numpy()
    return X, y


def written(tmp_path: Path, flavor: str, data: bytes) -> Path:
    path = tmp_path / ARTIFACT_FILES[flavor]
    path.write_bytes(data)
    return path


def focal(preds, dataset):
    """A custom objective (logistic loss written by hand): LightGBM records no objective."""
    y = dataset.get_label()
    p = 1 / (1 + np.exp(-preds))
    return p - y, p * (1 - p)


def test_a_lightgbm_model_with_a_custom_objective_scores_as_probabilities(tmp_path, data):
    import lightgbm as lgb

    X, y = data
    params = {"objective": focal, "verbose": -1, "num_threads": 1, "deterministic": True}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=20)
    path = written(tmp_path, "lightgbm", booster.model_to_string().encode())
    model = accept_trained(path, FEATURES, X, WHAT)
    assert isinstance(model, BoosterModel) and model.margin
    raw = booster.predict(X.to_numpy())
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], 1 / (1 + np.exp(-raw)))
    # Serving compiles it and applies the same link.
    served = scorer(model, list(FEATURES))
    assert served.runtime == "treelite"
    np.testing.assert_allclose(served.predict(X.to_numpy()), model.predict(X.to_numpy()))


def test_an_xgboost_logitraw_model_is_a_margin_model(tmp_path, data):
    import xgboost as xgb

    X, y = data
    booster = xgb.train({"objective": "binary:logitraw"}, xgb.DMatrix(X, y), 10)
    model = accept_trained(
        written(tmp_path, "xgboost", booster.save_raw("json")), FEATURES, X, WHAT
    )
    assert isinstance(model, BoosterModel) and model.margin
    assert scorer(model, list(FEATURES)).runtime == "treelite"


def test_a_regression_booster_is_refused(tmp_path, data):
    import xgboost as xgb

    X, y = data
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(X, y), 5)
    with pytest.raises(ArtifactRefused) as exc:
        accept_trained(written(tmp_path, "xgboost", booster.save_raw("json")), FEATURES, X, WHAT)
    assert str(exc.value) == (
        f"{WHAT}: the xgboost model's objective is 'reg:squarederror'; the platform serves "
        "binary classifiers: one of binary:logistic, binary:logitraw"
    )


def test_a_model_of_other_features_is_refused(tmp_path, data):
    import lightgbm as lgb

    X, y = data
    other = X.rename(columns={"c": "zone_id"})
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(other, y), 5)
    with pytest.raises(ArtifactRefused) as exc:
        accept_trained(
            written(tmp_path, "lightgbm", booster.model_to_string().encode()), FEATURES, X, WHAT
        )
    assert str(exc.value) == (
        f"{WHAT}: the model expects features [a, b, zone_id], not the training set's [a, b, c]"
    )


def test_a_file_of_another_flavor_is_refused_by_the_declared_flavors_parser(tmp_path, data):
    import lightgbm as lgb

    X, y = data
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 5)
    # Declared xgboost, returned LightGBM: XGBoost's parser refuses the bytes.
    path = written(tmp_path, "xgboost", booster.model_to_string().encode())
    with pytest.raises(
        ArtifactRefused, match="^" + re.escape(f"{WHAT}: model.json is not an XGBoost model (")
    ):
        accept_trained(path, FEATURES, X, WHAT)


def test_a_pickle_in_place_of_a_skops_file_never_runs(tmp_path, data):
    X, _ = data
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = written(tmp_path, "sklearn", pickle.dumps(Evil()))
    with pytest.raises(
        ArtifactRefused, match="^" + re.escape(f"{WHAT}: model.skops is not a skops file")
    ):
        accept_trained(path, FEATURES, X, WHAT)
    assert not marker.exists()


def test_a_skops_pipeline_is_accepted(tmp_path, data):
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = data
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = accept_trained(
        written(tmp_path, "sklearn", skops.io.dumps(pipeline)), FEATURES, X, WHAT
    )
    np.testing.assert_allclose(model.predict_proba(X), pipeline.predict_proba(X))


def logistic_onnx(weights: list[float], bias: float):
    """P(class 1) = sigmoid(x . w + b), as ONNX operators, output `probabilities` [N, 1]."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probabilities"]),
        ],
        "logistic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(weights)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 1])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, [len(weights), 1], weights),
            helper.make_tensor("b", TensorProto.FLOAT, [1], [bias]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_onnx_model_is_accepted_and_served_by_onnx_runtime(tmp_path, data):
    X, _ = data
    proto = logistic_onnx([1.5, -0.5, 0.0], 0.1)
    model = accept_trained(written(tmp_path, "onnx", proto.SerializeToString()), FEATURES, X, WHAT)
    assert isinstance(model, OnnxModel) and model.feature_names_in_ == FEATURES
    expected = 1 / (1 + np.exp(-(X.to_numpy() @ np.array([1.5, -0.5, 0.0]) + 0.1)))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, atol=1e-6)
    served = scorer(model, list(FEATURES))
    assert served.runtime == "onnxruntime"
    np.testing.assert_allclose(served.predict(X.to_numpy()), expected, atol=1e-6)


def test_an_onnx_model_of_another_width_is_refused(tmp_path, data):
    X, _ = data
    path = written(tmp_path, "onnx", logistic_onnx([1.0, 2.0], 0.0).SerializeToString())
    with pytest.raises(ArtifactRefused) as exc:
        accept_trained(path, FEATURES, X, WHAT)
    assert str(exc.value) == (
        f"{WHAT}: the ONNX model's input takes 2 features; the training set has 3 (a, b, c)"
    )


def test_an_onnx_model_is_logged_with_its_features_and_loaded_back(tmp_path, data):
    """Logged to MLflow by the platform with the features recorded in the model itself, and
    loaded back by the loader every consumer uses."""
    import mlflow as mlflow_lib

    from platform_assets.models.flavors import load_folder
    from platform_assets.resources.mlflow import MlflowResource

    X, _ = data
    resource = MlflowResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art")
    )
    resource.client()
    mlflow_lib.set_experiment(experiment_id=resource.ensure_experiment("onnx"))
    model = accept_trained(
        written(tmp_path, "onnx", logistic_onnx([1.5, -0.5, 0.0], 0.1).SerializeToString()),
        FEATURES,
        X,
        WHAT,
    )
    with mlflow_lib.start_run():
        info = log_model(model, X)
    folder = Path(mlflow_lib.artifacts.download_artifacts(info.model_uri))
    loaded = load_folder(folder, "onnx")
    assert loaded.feature_names_in_ == FEATURES
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))


def test_an_onnx_model_reading_tensors_from_other_files_is_refused(tmp_path, data):
    """A tensor's data "in an external file" names a path: the platform's files never become
    a model's weights (and so never its scores)."""
    from onnx import TensorProto

    X, _ = data
    proto = logistic_onnx([1.0, 2.0, 3.0], 0.0)
    weights = proto.graph.initializer[0]
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "../../platform.db"
    path = written(tmp_path, "onnx", proto.SerializeToString())
    with pytest.raises(ArtifactRefused) as exc:
        accept_trained(path, FEATURES, X, WHAT)
    assert str(exc.value) == (
        f"{WHAT}: the ONNX model keeps tensor(s) w in external files; the platform accepts a "
        "model in one file"
    )
