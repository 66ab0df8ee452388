"""The serving runtime: a compiled ensemble only where it scores as scikit-learn does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from platform_assets.models.training import build_pipeline
from platform_assets.serving.runtime import TOLERANCE, scorer, split_rows

COLUMNS = [f"f{i}" for i in range(6)]


def training_set(rows: int = 3000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(rows, len(COLUMNS)))
    X[rng.random(X.shape) < 0.15] = np.nan  # missing values go down their learned branch
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 > 0.8).astype(int)
    return pd.DataFrame(X, columns=COLUMNS), y


def fitted(algorithm: str, **params):
    X, y = training_set()
    return build_pipeline(algorithm, params).fit(X, y)


def test_gradient_boosting_scores_through_treelite_as_scikit_learn_does():
    model = fitted("gradient_boosting", max_iter=150)
    scoring = scorer(model, COLUMNS)
    assert scoring.runtime == "treelite", scoring.note
    X, _ = training_set()
    want = model.predict_proba(X)[:, 1]
    assert np.max(np.abs(scoring.predict(X.to_numpy()) - want)) <= TOLERANCE
    one = X.to_numpy()[:1]
    assert scoring.predict(one)[0] == pytest.approx(want[0], abs=TOLERANCE)


def test_split_rows_sit_on_every_threshold():
    import treelite

    model = fitted("gradient_boosting", max_iter=20)
    rows = split_rows(treelite.sklearn.import_model(model[-1]), len(COLUMNS), rows=20000)
    assert np.isnan(rows).any(axis=0).all()  # every column is also missing somewhere
    tree = model[-1]._predictors[0][0].nodes  # scikit-learn's own first tree
    split = tree[~tree["is_leaf"].astype(bool)][0]
    column = rows[:, split["feature_idx"]]
    threshold = split["num_threshold"]
    for value in (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf)):
        assert (column == value).any()


def test_a_pipeline_with_preprocessing_is_scored_by_scikit_learn():
    model = fitted("random_forest", n_estimators=10)
    scoring = scorer(model, COLUMNS)
    assert scoring.runtime == "scikit-learn"
    assert scoring.note == "Pipeline: not a tree ensemble alone"
    X, _ = training_set()
    np.testing.assert_array_equal(scoring.predict(X.to_numpy()), model.predict_proba(X)[:, 1])


def test_a_compiled_model_that_disagrees_is_not_used(monkeypatch):
    import treelite.gtil

    real = treelite.gtil.predict
    monkeypatch.setattr(treelite.gtil, "predict", lambda *a, **kw: real(*a, **kw) + 1e-6)
    model = fitted("gradient_boosting", max_iter=20)
    scoring = scorer(model, COLUMNS)
    assert scoring.runtime == "scikit-learn"
    assert scoring.note.startswith("Treelite's scores differ from scikit-learn's by up to 1e-06")
    assert scoring.note.endswith("(tolerance 1e-12): scored by scikit-learn")
    X, _ = training_set()
    np.testing.assert_array_equal(scoring.predict(X.to_numpy()), model.predict_proba(X)[:, 1])
