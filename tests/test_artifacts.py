"""Model artifacts: the content hash recorded at registration is what every load verifies, and
the loader reads skops with the platform's allow-list only, never a pickle. Real MLflow
(SQLite and a local artifact root) in a temp dir."""

from __future__ import annotations

import os
import pickle
import typing
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.served_tenant import artifact_folder, register_sklearn
from platform_assets.models.artifacts import ArtifactRefused, artifact_digest
from platform_assets.models.flavors import (
    LOADERS,
    SKLEARN_TRUSTED_TYPES,
    SKOPS_FILE,
    load_folder,
    load_sklearn,
    load_verified,
    record_logged,
)
from platform_assets.models.training import build_pipeline
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.tenancy.specs import Algorithm


class Bomb:
    """A pickle that, when loaded, creates `marker`: proof that a load ran its bytes."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory) -> MlflowResource:
    root = tmp_path_factory.mktemp("mlflow")
    return MlflowResource(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "artifacts")
    )


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    X.loc[::7, "b"] = np.nan  # the imputers and missing-value branches are part of the model
    return X, (X["a"] + rng.normal(scale=0.5, size=300) > 0).astype(int).to_numpy()


# The built-ins trained as scikit-learn pipelines (the boosters are saved in their own formats).
SKLEARN_ALGORITHMS = sorted(set(typing.get_args(Algorithm)) - {"xgboost", "lightgbm"})


def registered(mlflow: MlflowResource, data, algorithm: str = "gradient_boosting"):
    """A new model `t.m<uuid>` with one version logged as the model step logs it."""
    X, y = data
    name = f"t.m{uuid.uuid4().hex[:8]}"
    pipeline = build_pipeline(algorithm, {}).fit(X, y)
    version, digest = register_sklearn(mlflow, name, pipeline, X)
    return name, version, digest, pipeline


@pytest.mark.parametrize("algorithm", SKLEARN_ALGORITHMS)
def test_a_builtin_needs_no_type_outside_the_allow_list(algorithm, data):
    import skops.io

    model = build_pipeline(algorithm, {}).fit(*data)
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    assert set(untrusted) <= set(SKLEARN_TRUSTED_TYPES)


def test_the_allow_list_holds_nothing_the_builtins_do_not_need(data):
    import skops.io

    needed = {
        t
        for algorithm in SKLEARN_ALGORITHMS
        for t in skops.io.get_untrusted_types(
            data=skops.io.dumps(build_pipeline(algorithm, {}).fit(*data))
        )
    }
    assert needed == set(SKLEARN_TRUSTED_TYPES)


def test_the_digest_covers_every_name_and_byte(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "sub").mkdir(parents=True)
        (folder / "MLmodel").write_text("flavors: {}\n")
        (folder / "sub" / "x").write_bytes(b"12")
    assert artifact_digest(a) == artifact_digest(b)  # content, not where it lies
    (b / "sub" / "x").write_bytes(b"13")
    assert artifact_digest(a) != artifact_digest(b)
    (b / "sub" / "x").write_bytes(b"12")
    (b / "sub" / "x").rename(b / "sub" / "y")
    assert artifact_digest(a) != artifact_digest(b)
    (b / "sub" / "y").rename(b / "sub" / "x")
    (b / "extra").write_bytes(b"")
    assert artifact_digest(a) != artifact_digest(b)
    (b / "extra").unlink()
    # Bytes moved from one file's end to the next file's name do not hash alike.
    (a / "MLmodel").write_text("flavors: {}\nsub")
    (b / "MLmodel").write_text("flavors: {}\n")
    assert artifact_digest(a) != artifact_digest(b)


def test_mlflows_own_download_does_not_change_what_is_verified(mlflow, data):
    """MLflow's loader writes `registered_model_meta` into the stored folder of a local store;
    the champion must still verify afterwards."""
    import mlflow as mlflow_lib

    name, version, digest, pipeline = registered(mlflow, data)
    mlflow_lib.sklearn.load_model(f"models:/{name}/{version}")
    assert (artifact_folder(mlflow, name, version) / "registered_model_meta").exists()
    X, _ = data
    model = load_verified(mlflow, name, version, digest)
    assert np.array_equal(model.predict_proba(X), pipeline.predict_proba(X))


def test_a_symlink_in_an_artifact_is_refused(tmp_path):
    (tmp_path / "MLmodel").write_text("")
    os.symlink("/etc/passwd", tmp_path / SKOPS_FILE)
    with pytest.raises(ArtifactRefused, match=f"^{SKOPS_FILE}: not a regular file$"):
        artifact_digest(tmp_path)


def test_a_verified_version_loads_and_scores_as_trained(mlflow, data):
    name, version, digest, pipeline = registered(mlflow, data, "random_forest")
    model = load_verified(mlflow, name, version, digest)
    X, _ = data
    assert np.array_equal(model.predict_proba(X), pipeline.predict_proba(X))


def test_a_version_replaced_in_mlflow_is_refused(mlflow, data):
    import skops.io

    name, version, digest, _ = registered(mlflow, data)
    other = build_pipeline("logistic_regression", {}).fit(*data)
    stored = artifact_folder(mlflow, name, version) / SKOPS_FILE
    stored.write_bytes(skops.io.dumps(other))
    actual = artifact_digest(stored.parent)
    with pytest.raises(ArtifactRefused) as refused:
        load_verified(mlflow, name, version, digest)
    assert str(refused.value) == (
        f"{name} v{version}: artifact refused: its files hash to sha256 {actual[:12]}..., not "
        f"the {digest[:12]}... the platform recorded when it registered the version (changed "
        "in MLflow since); not loaded"
    )


def test_a_version_without_a_recorded_hash_is_refused(mlflow, data):
    name, version, _, _ = registered(mlflow, data)
    with pytest.raises(ArtifactRefused) as refused:
        load_verified(mlflow, name, version, None)
    assert str(refused.value) == (
        f"{name} v{version}: the platform holds no artifact hash for this version (registered "
        "before artifacts were hashed, or not by the platform); not loaded. Retrain and promote "
        "a new version"
    )


def test_a_pickle_where_the_model_should_be_never_runs(mlflow, data, tmp_path):
    name, version, digest, _ = registered(mlflow, data)
    folder = artifact_folder(mlflow, name, version)
    marker = tmp_path / "the-pickle-ran"
    bomb = pickle.dumps(Bomb(marker))
    # MLflow's own loader would now unpickle it: the MLmodel says pickle and names the file.
    mlmodel = (folder / "MLmodel").read_text()
    (folder / "MLmodel").write_text(
        mlmodel.replace("serialization_format: skops", "serialization_format: pickle").replace(
            f"pickled_model: {SKOPS_FILE}", "pickled_model: model.pkl"
        )
    )
    assert "serialization_format: pickle" in (folder / "MLmodel").read_text()
    (folder / "model.pkl").write_bytes(bomb)
    (folder / SKOPS_FILE).write_bytes(bomb)
    with pytest.raises(ArtifactRefused, match="artifact refused: its files hash to"):
        load_verified(mlflow, name, version, digest)
    # Even were the platform's record to name these very files, only skops is read.
    with pytest.raises(ArtifactRefused) as refused:
        load_verified(mlflow, name, version, artifact_digest(folder))
    assert str(refused.value) == (
        f"{name} v{version}: {SKOPS_FILE} is not a skops file (BadZipFile: File is not a zip file)"
    )
    assert not marker.exists()
    pickle.loads(bomb)  # the bomb is live: the loads above did not run it
    assert marker.exists()


def test_an_artifact_without_a_skops_file_is_refused(tmp_path):
    (tmp_path / "MLmodel").write_text("")
    (tmp_path / "model.pkl").write_bytes(b"")
    with pytest.raises(ArtifactRefused) as refused:
        load_folder(tmp_path, "t.m v3")
    assert str(refused.value) == (
        "t.m v3: the artifact holds MLmodel, model.pkl; the platform loads exactly one of "
        f"{', '.join(LOADERS)} (never a pickle)"
    )


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path, data):
    import skops.io
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # A transformer that would call os.system on the rows it is given.
    hostile = make_pipeline(FunctionTransformer(os.system)).fit(data[0])
    (tmp_path / SKOPS_FILE).write_bytes(skops.io.dumps(hostile))
    untrusted = set(skops.io.get_untrusted_types(file=tmp_path / SKOPS_FILE))
    with pytest.raises(ArtifactRefused) as refused:
        load_sklearn(tmp_path, "t.m v4")
    assert str(refused.value) == (
        f"t.m v4: {SKOPS_FILE} holds type(s) the platform does not trust: "
        f"{', '.join(sorted(untrusted - set(SKLEARN_TRUSTED_TYPES)))}; not loaded"
    )
    assert "posix.system" in str(refused.value)


def test_an_artifact_that_does_not_score_as_trained_is_not_recorded(mlflow, data):
    import mlflow as mlflow_lib

    X, y = data
    trained = build_pipeline("gradient_boosting", {}).fit(X, y)
    other = build_pipeline("logistic_regression", {}).fit(X, y)
    with mlflow_lib.start_run(experiment_id=mlflow.ensure_experiment("t/swap")):
        info = mlflow_lib.sklearn.log_model(
            other,
            name="model",
            serialization_format="skops",
            skops_trusted_types=list(SKLEARN_TRUSTED_TYPES),
            pip_requirements=["scikit-learn"],
        )
    with pytest.raises(ArtifactRefused) as refused:
        record_logged(mlflow, info.model_id, trained, X, "t.swap (run r1)")
    assert str(refused.value) == (
        "t.swap (run r1): the artifact read back from MLflow does not score as the model this "
        "step trained (replaced after logging?); not registered"
    )
