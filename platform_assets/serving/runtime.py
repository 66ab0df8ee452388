"""How a champion scores in `mlplat serve`: its trees compiled by Treelite, or scikit-learn.

scikit-learn predicts a row of a gradient-boosted ensemble by calling every tree from Python
(0.75 ms for 150 trees, most of a request's time). Treelite's GTIL walks the same trees in C++
in double precision (0.04 ms). Serving must return the champion's own scores, so a compiled
ensemble is used only after it agreed with scikit-learn at load, within `TOLERANCE`, on rows
built from every split of the model itself: each threshold, the floats on either side of it
and a missing value, the only places where two runtimes can send a row down different
branches. Anything else (a pipeline with preprocessing, a linear model, a disagreement) is
scored by scikit-learn, and the service says which runtime each champion uses.
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

log = logging.getLogger("mlplat.serve")

# Sums of the same leaves in another order differ in the last bits; a branch taken differently
# moves a score by far more (float32 thresholds moved some by 0.04).
TOLERANCE = 1e-12
VERIFY_ROWS = 4096

# Treelite writes an infinite threshold (a split that sends only missing values right) as
# nothing at all; JSON's reader needs a number there.
_EMPTY_THRESHOLD = re.compile(r'("threshold": ),')


@dataclass(frozen=True)
class Scorer:
    runtime: str  # "treelite" or "scikit-learn"
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


def scorer(model: Any, columns: list[str]) -> Scorer:
    """The fastest runtime that scores exactly as the champion does."""
    estimator = _ensemble(model)
    if estimator is None:
        return _sklearn(model, columns, f"{type(model).__name__}: not a tree ensemble alone")
    import treelite
    import treelite.gtil

    compiled = treelite.sklearn.import_model(estimator)

    def predict(rows: np.ndarray) -> np.ndarray:
        # (rows, targets, classes): one target, and for a binary model one class, P(class 1).
        return treelite.gtil.predict(compiled, rows, nthread=1).reshape(len(rows), -1)[:, -1]

    sklearn = _sklearn(model, columns, "")
    rows = split_rows(compiled, len(columns))
    gap = float(np.max(np.abs(predict(rows) - sklearn.predict(rows))))
    if not gap <= TOLERANCE:
        note = (
            f"Treelite's scores differ from scikit-learn's by up to {gap:.3g} on the model's "
            f"split points (tolerance {TOLERANCE:g}): scored by scikit-learn"
        )
        log.warning(note)
        return _sklearn(model, columns, note)
    note = f"{type(estimator).__name__} compiled; agrees with scikit-learn within {gap:.1g}"
    return Scorer("treelite", note, predict)
