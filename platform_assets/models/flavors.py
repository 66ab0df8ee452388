"""How each built-in algorithm's model is trained, logged to MLflow and loaded back: scikit-learn
through skops, XGBoost as JSON and LightGBM as its text model. No flavor is ever pickled.

Loading is only ever from a folder `models/artifacts.py` has verified against the hash the
platform recorded (`load_verified`), by the model file that folder holds.

XGBoost and LightGBM are imported inside the functions that use them: the code location must
not load them.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from platform_assets.models.artifacts import (
    ArtifactRefused,
    artifact_digest,
    downloaded,
    verified_download,
)
from platform_assets.models.training import build_pipeline
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.tenancy.specs import BOUNDED_PARAMS, bounded_params

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import numpy as np
    import pandas as pd
    from mlflow.models.model import ModelInfo

SKOPS_FILE = "model.skops"
# The types outside skops' default trust that the platform's scikit-learn built-ins hold (a
# test keeps this list equal to what each built-in needs): tree node arrays and dtypes. Not a
# blanket `trusted=True`: a file naming any other type is refused before it is loaded.
SKLEARN_TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)
# The files MLflow writes for a booster: XGBoost as `model.<model_format>`, LightGBM as text.
XGBOOST_FILES = ("model.json", "model.ubj")
LIGHTGBM_FILE = "model.lgb"


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
        # skops, not pickle: loading cannot run arbitrary code. Every loader reads it with the
        # same allow-list (`load_sklearn`).
        serialization_format="skops",
        skops_trusted_types=list(SKLEARN_TRUSTED_TYPES),
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


# --- loading (from a verified folder) ------------------------------------------------------
# The loader is chosen by the one model file the verified folder holds, never by MLflow's
# `MLmodel` (which a writer to the store could make name pickle) and never from a pickle.


def _model_file(folder: Path, name: str, what: str) -> Path:
    """`folder`'s top-level regular file `name`; refused when it is missing or a symlink."""
    path = folder / name
    if not path.is_file() or path.is_symlink():
        raise ArtifactRefused(f"{what}: {name} is not a regular file in the artifact")
    return path


def load_sklearn(folder: Path, what: str) -> Any:
    """The scikit-learn model in `folder`'s skops file, refusing any type outside skops' own
    trust and `SKLEARN_TRUSTED_TYPES`."""
    import skops.io

    path = _model_file(folder, SKOPS_FILE, what)
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactRefused(
            f"{what}: {SKOPS_FILE} is not a skops file ({type(exc).__name__}: {exc})"
        ) from exc
    refused = sorted(set(untrusted) - set(SKLEARN_TRUSTED_TYPES))
    if refused:
        raise ArtifactRefused(
            f"{what}: {SKOPS_FILE} holds type(s) the platform does not trust: "
            f"{', '.join(refused)}; not loaded"
        )
    return skops.io.load(path, trusted=list(untrusted))


def load_xgboost(folder: Path, what: str) -> BoosterModel:
    """XGBoost's JSON or UBJ model file, read by XGBoost itself (the format from its suffix)."""
    import xgboost as xgb

    name = next((n for n in XGBOOST_FILES if (folder / n).exists()), XGBOOST_FILES[0])
    path = _model_file(folder, name, what)
    try:
        booster = xgb.Booster(model_file=str(path))
    except xgb.core.XGBoostError as exc:
        raise ArtifactRefused(f"{what}: {name} is not an XGBoost model ({exc})") from exc
    booster.set_param({"nthread": 1})
    if not booster.feature_names:
        raise ArtifactRefused(f"{what}: the xgboost model {name} records no feature names")
    return BoosterModel("xgboost", booster, tuple(booster.feature_names))


def load_lightgbm(folder: Path, what: str) -> BoosterModel:
    """LightGBM's text model, parsed by LightGBM."""
    import lightgbm as lgb

    path = _model_file(folder, LIGHTGBM_FILE, what)
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ArtifactRefused(f"{what}: {LIGHTGBM_FILE} is not a LightGBM model ({exc})") from exc
    return BoosterModel("lightgbm", booster, tuple(booster.feature_name()))


LOADERS = {
    SKOPS_FILE: load_sklearn,
    **{name: load_xgboost for name in XGBOOST_FILES},
    LIGHTGBM_FILE: load_lightgbm,
}


def load_folder(folder: Path, what: str) -> Any:
    """The model in a verified folder, by the one model file it holds: `model.skops`
    (scikit-learn), `model.json` or `model.ubj` (XGBoost) or `model.lgb` (LightGBM)."""
    found = sorted(name for name in LOADERS if (folder / name).exists())
    if len(found) != 1:
        held = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise ArtifactRefused(
            f"{what}: the artifact holds {held}; the platform loads exactly one of "
            f"{', '.join(LOADERS)} (never a pickle)"
        )
    return LOADERS[found[0]](folder, what)


def load_verified(
    mlflow: MlflowResource, registered: str, version: int, expected: str | None
) -> Any:
    """Version `version` of `registered`, verified against `expected` and loaded from its safe
    format: what evaluation, batch scoring, drift and serving call."""
    with verified_download(mlflow, registered, version, expected) as folder:
        return load_folder(folder, f"{registered} v{version}")


def record_logged(mlflow: MlflowResource, model_id: str, trained: Any, X: Any, what: str) -> str:
    """The content hash of logged model `model_id`, to be recorded before it is registered.

    The files are read back from MLflow (what every later load will verify against) and loaded
    as any loader would; their model must score every training row exactly as the model this
    step trained, so an artifact replaced between logging and registering is not recorded."""
    import numpy as np

    location = mlflow.client().get_logged_model(model_id).artifact_location
    with downloaded(mlflow, location) as folder:
        digest = artifact_digest(folder)
        stored = load_folder(folder, what)
    if not np.array_equal(stored.predict_proba(X), trained.predict_proba(X)):
        raise ArtifactRefused(
            f"{what}: the artifact read back from MLflow does not score as the model this step "
            "trained (replaced after logging?); not registered"
        )
    return digest
