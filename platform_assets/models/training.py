"""Training and evaluation with scikit-learn; plots rendered to PNG for the UI and MLflow."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

# Re-exported: the evaluation step and older callers import them from here.
from platform_assets.models.metrics import HIGHER_IS_BETTER, failed_thresholds  # noqa: F401

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import numpy as np
    import pandas as pd

META_COLUMNS = ("event_timestamp", "split")


def feature_columns(df: pd.DataFrame, entity_columns: list[str], label: str) -> list[str]:
    skip = {*entity_columns, label, *META_COLUMNS}
    return [c for c in df.columns if c not in skip and not c.endswith("_ts")]


def build_pipeline(algorithm: str, params: dict[str, Any]):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if algorithm == "gradient_boosting":
        # Handles missing values natively: a missing feature (no row within TTL) is signal.
        return make_pipeline(HistGradientBoostingClassifier(random_state=0, **params))
    if algorithm == "random_forest":
        return make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True),
            RandomForestClassifier(random_state=0, n_jobs=1, **params),
        )
    if algorithm == "logistic_regression":
        return make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True),
            StandardScaler(),
            LogisticRegression(random_state=0, **params),
        )
    raise ValueError(f"unknown algorithm {algorithm!r}")


def metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    pred = (proba >= 0.5).astype(int)
    return {
        "roc_auc": float(m.roc_auc_score(y, proba)),
        "average_precision": float(m.average_precision_score(y, proba)),
        "log_loss": float(m.log_loss(y, proba, labels=[0, 1])),
        "brier": float(m.brier_score_loss(y, proba)),
        "accuracy": float(m.accuracy_score(y, pred)),
        "f1": float(m.f1_score(y, pred, zero_division=0)),
        "positive_rate": float(np.mean(y)),
    }


def plots(y: np.ndarray, proba: np.ndarray, title: str) -> dict[str, Any]:
    """ROC, precision-recall and calibration figures (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figures = {}
    for name, display in [
        ("roc_curve", lambda ax: RocCurveDisplay.from_predictions(y, proba, ax=ax)),
        ("precision_recall", lambda ax: PrecisionRecallDisplay.from_predictions(y, proba, ax=ax)),
        ("calibration", lambda ax: CalibrationDisplay.from_predictions(y, proba, n_bins=10, ax=ax)),
    ]:
        fig, ax = plt.subplots(figsize=(4.5, 4), dpi=80)
        display(ax)
        ax.set_title(f"{title}: {name.replace('_', ' ')}")
        fig.tight_layout()
        figures[name] = fig
    return figures


def png_markdown(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode()
    return f"![{fig.axes[0].get_title()}](data:image/png;base64,{data})"


def time_split(df: pd.DataFrame, test_fraction: float) -> pd.Series:
    """Latest `test_fraction` of label times is held out: the model is judged on the future."""
    import pandas as pd

    cutoff = df["event_timestamp"].quantile(1 - test_fraction)
    return pd.Series(
        ["test" if t > cutoff else "train" for t in df["event_timestamp"]], index=df.index
    )
