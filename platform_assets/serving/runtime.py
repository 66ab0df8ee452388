"""How a champion scores in `mlplat serve`: its trees compiled by Treelite, or natively.

scikit-learn predicts a row of a gradient-boosted ensemble by calling every tree from Python
(0.75 ms for 150 trees, most of a request's time). Treelite's GTIL walks the same trees in C++
in double precision (0.04 ms). Serving must return the champion's own scores, so a compiled
ensemble is used only after it agreed with scikit-learn at load, within `TOLERANCE`, on rows
built from every split of the model itself: each threshold, the floats on either side of it
and a missing value, the only places where two runtimes can send a row down different
branches. Anything else (a pipeline with preprocessing, a linear model, a disagreement) is
scored by scikit-learn, and the service says which runtime each champion uses. XGBoost and
LightGBM boosters are compiled the same way from their native models and checked against
their own library's scores; one that disagrees is scored by that library.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from platform_assets.models.flavors import BoosterModel, OnnxModel, expit

log = logging.getLogger("mlplat.serve")

# Sums of the same leaves in another order differ in the last bits; a branch taken differently
# moves a score by far more (float32 thresholds moved some by 0.04).
TOLERANCE = 1e-12
# XGBoost keeps thresholds and leaves in float32 and so does Treelite's import of it: scores
# agree to a float32 rounding of the sum (1.2e-7 measured), branches exactly.
BOOSTER_TOLERANCE = {"xgboost": 1e-6, "lightgbm": TOLERANCE}
# LightGBM reads any value within this of zero (its kZeroThreshold, a float32 1e-35) as zero
# before walking its trees; Treelite does not, so its input is given the same treatment.
LIGHTGBM_ZERO = float(np.float32(1e-35))
VERIFY_ROWS = 4096

# Treelite writes an infinite threshold (a split that sends only missing values right) as
# nothing at all; JSON's reader needs a number there.
_EMPTY_THRESHOLD = re.compile(r'("threshold": ),')


@dataclass(frozen=True)
class Scorer:
    # "treelite", or the model's own library: "scikit-learn", "xgboost", "lightgbm",
    # "onnxruntime"
    runtime: str
    note: str  # why this runtime
    predict: Callable[[np.ndarray], np.ndarray]  # rows x columns (float64) -> P(class 1)


def _sklearn(model: Any, columns: list[str], note: str) -> Scorer:
    import pandas as pd

    def predict(rows: np.ndarray) -> np.ndarray:
        return model.predict_proba(pd.DataFrame(rows, columns=columns))[:, 1]

    return Scorer("scikit-learn", note, predict)


def _ensemble(model: Any) -> Any | None:
    """The tree ensemble Treelite can compile: a one-step pipeline's binary classifier."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.pipeline import Pipeline

    estimator = model[-1] if isinstance(model, Pipeline) and len(model) == 1 else model
    kinds = (
        HistGradientBoostingClassifier,
        GradientBoostingClassifier,
        RandomForestClassifier,
        ExtraTreesClassifier,
    )
    if isinstance(estimator, kinds) and len(getattr(estimator, "classes_", [])) == 2:
        return estimator
    return None


def split_rows(compiled: Any, n_columns: int, rows: int = VERIFY_ROWS) -> np.ndarray:
    """Rows whose every value sits on a split of `compiled`: a threshold, the float just below
    or above it, or missing (seeded, so a load is repeatable)."""
    dump = json.loads(_EMPTY_THRESHOLD.sub(r"\1Infinity,", compiled.dump_as_json()))
    values: list[set[float]] = [{math.nan, 0.0} for _ in range(n_columns)]
    for tree in dump["trees"]:
        for node in tree["nodes"]:
            threshold = node.get("threshold")
            if threshold is None or not math.isfinite(threshold):
                continue
            feature = values[node["split_feature_id"]]
            feature.update(
                (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf))
            )
    rng = np.random.default_rng(0)
    columns = [rng.choice(np.array(sorted(v, key=str)), size=rows) for v in values]
    return np.column_stack(columns).astype(np.float64)


def _lightgbm_input(rows: np.ndarray) -> np.ndarray:
    return np.where(np.abs(rows) <= LIGHTGBM_ZERO, 0.0, rows)


def _verified(
    compiled: Any,
    own: Scorer,
    n_columns: int,
    tolerance: float,
    what: str,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    margin: bool = False,
) -> Scorer:
    """Treelite's `compiled` model if it scores as the model's own library (`own`) does on the
    model's split points, else `own`. `prepare` reads rows as the library does; a `margin`
    model's compiled log-odds go through the logistic function, as the library's do."""
    import treelite.gtil

    def predict(rows: np.ndarray) -> np.ndarray:
        if prepare is not None:
            rows = prepare(rows)
        # (rows, targets, classes): one target, and for a binary model one class, P(class 1).
        out = treelite.gtil.predict(compiled, rows, nthread=1).reshape(len(rows), -1)[:, -1]
        return expit(out) if margin else out

    rows = split_rows(compiled, n_columns)
    gap = float(np.max(np.abs(predict(rows) - own.predict(rows))))
    if not gap <= tolerance:
        note = (
            f"Treelite's scores differ from {own.runtime}'s by up to {gap:.3g} on the model's "
            f"split points (tolerance {tolerance:g}): scored by {own.runtime}"
        )
        log.warning(note)
        return Scorer(own.runtime, note, own.predict)
    return Scorer(
        "treelite", f"{what} compiled; agrees with {own.runtime} within {gap:.1g}", predict
    )


def _booster(model: BoosterModel, columns: list[str]) -> Scorer:
    """A booster compiled from its native model, checked against its library's own scores."""
    import treelite

    if model.flavor == "xgboost":
        compiled, prepare = treelite.frontend.from_xgboost(model.booster), None
    else:
        compiled, prepare = treelite.frontend.from_lightgbm(model.booster), _lightgbm_input
    own = Scorer(model.flavor, "", model.predict)
    tolerance = BOOSTER_TOLERANCE[model.flavor]
    what = f"{model.flavor} booster"
    return _verified(compiled, own, len(columns), tolerance, what, prepare, model.margin)


def scorer(model: Any, columns: list[str]) -> Scorer:
    """The fastest runtime that scores exactly as the champion does."""
    if isinstance(model, BoosterModel):
        return _booster(model, columns)
    if isinstance(model, OnnxModel):
        return Scorer(
            "onnxruntime", "an ONNX model, run by ONNX Runtime on one thread", model.predict
        )
    estimator = _ensemble(model)
    if estimator is None:
        return _sklearn(model, columns, f"{type(model).__name__}: not a tree ensemble alone")
    import treelite

    compiled = treelite.sklearn.import_model(estimator)
    own = _sklearn(model, columns, "")
    return _verified(compiled, own, len(columns), TOLERANCE, type(estimator).__name__)
