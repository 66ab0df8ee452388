"""How each built-in algorithm's model is trained, logged to MLflow and loaded back: scikit-learn
through skops, XGBoost as JSON and LightGBM as its text model. No flavor is ever pickled.

XGBoost and LightGBM are imported inside the functions that use them: the code location must
not load them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from platform_assets.models.training import build_pipeline
from platform_assets.tenancy.specs import BOUNDED_PARAMS, bounded_params

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import numpy as np
    import pandas as pd
    from mlflow.models.model import ModelInfo

# skops loads only these types besides its safe defaults. We trained the trees in the model
# step, so their node arrays are ours to trust.
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "numpy.dtype",
]
# What a logged booster's MLmodel must say, so a file swapped for a pickle is never unpickled
# by MLflow's own loader: we read the native file ourselves.
BOOSTER_CLASS = {"xgboost": "xgboost.core.Booster", "lightgbm": "lightgbm.basic.Booster"}
XGBOOST_FORMATS = ("json", "ubj")


def requirements(*packages: str) -> list[str]:
    """Pinned from what is installed: inferring them from the project costs seconds per model
    and captures the whole platform's lock file."""
    return [f"{p}=={package_version(p)}" for p in (*packages, "pandas", "numpy", "mlflow")]


def serving_requirements() -> list[str]:
    return requirements("scikit-learn", "skops")


@dataclass(frozen=True)
class BoosterModel:
    """An XGBoost or LightGBM booster with scikit-learn's scoring interface, so evaluation,
    batch scoring, drift and serving treat it as they treat a pipeline."""

    flavor: Literal["xgboost", "lightgbm"]
    booster: Any
    feature_names_in_: tuple[str, ...]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """P(class 1) of rows x features (float64, in `feature_names_in_` order), one thread."""
        if self.flavor == "xgboost":
            # XGBoost reads features as float32 whatever it is given.
            return self.booster.inplace_predict(rows, validate_features=False).astype("float64")
        return self.booster.predict(rows, num_threads=1)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        if tuple(X.columns) != self.feature_names_in_:
            raise ValueError(
                f"the {self.flavor} model was trained on features "
                f"{', '.join(self.feature_names_in_)}, not {', '.join(map(str, X.columns))}"
            )
        p = self.predict(X.to_numpy(dtype="float64"))
        return np.column_stack([1 - p, p])


# --- training ------------------------------------------------------------------------------


def train_xgboost(params: dict[str, Any], X: pd.DataFrame, y: np.ndarray) -> BoosterModel:
    """Seed, one thread and exact histograms fixed: the same training set gives the same bytes."""
    import xgboost as xgb

    classifier = xgb.XGBClassifier(
        objective="binary:logistic",
        tree_method="hist",
        n_jobs=1,
        random_state=0,
        **bounded_params("xgboost", params),
    ).fit(X, y)
    booster = classifier.get_booster()
    booster.set_param({"nthread": 1})
    return BoosterModel("xgboost", booster, tuple(booster.feature_names))


def train_lightgbm(params: dict[str, Any], X: pd.DataFrame, y: np.ndarray) -> BoosterModel:
    """LightGBM is reproducible only with `deterministic` and a fixed histogram layout."""
    import lightgbm as lgb

    classifier = lgb.LGBMClassifier(
        objective="binary",
        n_jobs=1,
        random_state=0,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
        **bounded_params("lightgbm", params),
    ).fit(X, y)
    booster = classifier.booster_
    return BoosterModel("lightgbm", booster, tuple(booster.feature_name()))


def fit(algorithm: str, params: dict[str, Any], X: pd.DataFrame, y: np.ndarray) -> Any:
    """The fitted model of a built-in algorithm: a scikit-learn pipeline or a booster."""
    if algorithm == "xgboost":
        return train_xgboost(params, X, y)
    if algorithm == "lightgbm":
        return train_lightgbm(params, X, y)
    return build_pipeline(algorithm, params).fit(X, y)


def effective_params(algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    """What the model was trained with: a bounded algorithm's defaults filled in."""
    return bounded_params(algorithm, params) if algorithm in BOUNDED_PARAMS else dict(params)


# --- logging to MLflow (inside an active run) -------------------------------------------------


def log_sklearn(model: Any, signature: Any) -> ModelInfo:
    import mlflow

    return mlflow.sklearn.log_model(
        model,
        name="model",
        # skops, not pickle: loading cannot run arbitrary code.
        skops_trusted_types=TRUSTED_TYPES,
        pip_requirements=serving_requirements(),
        signature=signature,
    )


def log_xgboost(model: BoosterModel, signature: Any) -> ModelInfo:
    import mlflow

    return mlflow.xgboost.log_model(
        model.booster,
        name="model",
        model_format="json",
        pip_requirements=requirements("xgboost-cpu"),
        signature=signature,
    )


def log_lightgbm(model: BoosterModel, signature: Any) -> ModelInfo:
    import mlflow

    # A Booster is written as LightGBM's text model; only the scikit-learn wrapper is pickled.
    return mlflow.lightgbm.log_model(
        model.booster,
        name="model",
        pip_requirements=requirements("lightgbm"),
        signature=signature,
    )


def log_model(model: Any, X: pd.DataFrame) -> ModelInfo:
    """Log `model` as artifact `model` of the active MLflow run, in its flavor's safe format."""
    from mlflow.models import infer_signature

    signature = infer_signature(X.head(100), model.predict_proba(X.head(100)))
    if isinstance(model, BoosterModel):
        log = log_xgboost if model.flavor == "xgboost" else log_lightgbm
        return log(model, signature)
    return log_sklearn(model, signature)


# --- loading --------------------------------------------------------------------------------


def _native_file(model_dir: Path, conf: dict[str, Any], flavor: str) -> Path:
    """The booster file the MLmodel names, checked: the class MLflow wrote for a booster, and
    a file inside the model's folder."""
    if conf.get("model_class") != BOOSTER_CLASS[flavor]:
        raise ValueError(
            f"the {flavor} model is a {conf.get('model_class')!r}, not a "
            f"{BOOSTER_CLASS[flavor]} saved in its native format: refused"
        )
    path = (model_dir / str(conf.get("data", ""))).resolve()
    if not path.is_relative_to(model_dir.resolve()) or not path.is_file():
        raise ValueError(f"the {flavor} model's data {conf.get('data')!r} is not a file in it")
    return path


def load_sklearn(model_dir: Path, conf: dict[str, Any]) -> Any:
    import mlflow

    return mlflow.sklearn.load_model(str(model_dir))


def load_xgboost(model_dir: Path, conf: dict[str, Any]) -> BoosterModel:
    """XGBoost's JSON or UBJ, read by XGBoost itself (the format from the file's suffix)."""
    import xgboost as xgb

    path = _native_file(model_dir, conf, "xgboost")
    model_format = conf.get("model_format")
    if model_format not in XGBOOST_FORMATS or path.suffix != f".{model_format}":
        raise ValueError(
            f"the xgboost model {path.name} is in format {model_format!r}, not one of "
            f"{', '.join(XGBOOST_FORMATS)}: refused"
        )
    booster = xgb.Booster(model_file=str(path))
    booster.set_param({"nthread": 1})
    if not booster.feature_names:
        raise ValueError(f"the xgboost model {path.name} records no feature names")
    return BoosterModel("xgboost", booster, tuple(booster.feature_names))


def load_lightgbm(model_dir: Path, conf: dict[str, Any]) -> BoosterModel:
    """LightGBM's text model, parsed by LightGBM."""
    import lightgbm as lgb

    path = _native_file(model_dir, conf, "lightgbm")
    booster = lgb.Booster(model_file=str(path))
    return BoosterModel("lightgbm", booster, tuple(booster.feature_name()))


LOADERS = {"sklearn": load_sklearn, "xgboost": load_xgboost, "lightgbm": load_lightgbm}


def load_model_dir(model_dir: Path) -> Any:
    """The model in a downloaded MLflow model folder, by the one built-in flavor its MLmodel
    names."""
    from mlflow.models import Model

    flavors = Model.load(str(model_dir / "MLmodel")).flavors
    found = [f for f in LOADERS if f in flavors]
    if len(found) != 1:
        raise ValueError(
            f"the model has flavors {', '.join(sorted(flavors))}: the platform loads exactly "
            f"one of {', '.join(LOADERS)}"
        )
    return LOADERS[found[0]](model_dir, flavors[found[0]])


def load_model(uri: str) -> Any:
    """The model at `uri` (`models:/<name>/<version>`), loaded from its safe format: a
    scikit-learn pipeline (skops) or a `BoosterModel`."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlplat-model-") as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        return load_model_dir(model_dir)
