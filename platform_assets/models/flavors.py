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
ONNX_FILE = "model.onnx"
# The metadata property in which the platform records an ONNX model's feature names.
ONNX_FEATURES = "mlplat_features"


def requirements(*packages: str) -> list[str]:
    """Pinned from what is installed: inferring them from the project costs seconds per model
    and captures the whole platform's lock file."""
    return [f"{p}=={package_version(p)}" for p in (*packages, "pandas", "numpy", "mlflow")]


def serving_requirements() -> list[str]:
    return requirements("scikit-learn", "skops")


def two_class_proba(model: BoosterModel | OnnxModel, X: pd.DataFrame, flavor: str) -> np.ndarray:
    """scikit-learn's `predict_proba` for a model that predicts P(class 1) of rows: the columns
    must be its features, in its order."""
    import numpy as np

    if tuple(X.columns) != model.feature_names_in_:
        raise ValueError(
            f"the {flavor} model was trained on features "
            f"{', '.join(model.feature_names_in_)}, not {', '.join(map(str, X.columns))}"
        )
    p = model.predict(X.to_numpy(dtype="float64"))
    return np.column_stack([1 - p, p])


@dataclass(frozen=True)
class BoosterModel:
    """An XGBoost or LightGBM booster with scikit-learn's scoring interface, so evaluation,
    batch scoring, drift and serving treat it as they treat a pipeline."""

    flavor: Literal["xgboost", "lightgbm"]
    booster: Any
    feature_names_in_: tuple[str, ...]
    # The booster predicts log-odds (a custom objective, or XGBoost's `binary:logitraw`): the
    # logistic function turns them into P(class 1) (`binary_link`).
    margin: bool = False

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """What the booster itself predicts for rows x features (float64), one thread."""
        if self.flavor == "xgboost":
            # XGBoost reads features as float32 whatever it is given.
            return self.booster.inplace_predict(rows, validate_features=False).astype("float64")
        return self.booster.predict(rows, num_threads=1)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """P(class 1) of rows x features (float64, in `feature_names_in_` order), one thread."""
        raw = self.raw(rows)
        return expit(raw) if self.margin else raw

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return two_class_proba(self, X, self.flavor)


def expit(raw: np.ndarray) -> np.ndarray:
    from scipy.special import expit as logistic

    return logistic(raw)


# The objectives of a binary classifier each booster's library turns into a probability
# itself, and those whose predictions are log-odds. Any other objective (regression, ranking,
# multi-class) is no binary classifier: a trainer's model with it is refused.
PROBABILITY_OBJECTIVES = {
    "xgboost": {"binary:logistic"},
    "lightgbm": {"binary", "cross_entropy", "xentropy"},
}
MARGIN_OBJECTIVES = {"xgboost": {"binary:logitraw"}, "lightgbm": {"custom", "none"}}


def booster_objective(flavor: str, booster: Any) -> str:
    """The objective a booster's own model records (`binary`, `custom`, `binary:logistic`...)."""
    import json

    if flavor == "xgboost":
        return json.loads(booster.save_config())["learner"]["objective"]["name"]
    # A model trained with a custom objective (a Python function) records none.
    return str(booster.dump_model(num_iteration=0).get("objective", "custom")).split(" ")[0]


def binary_link(flavor: str, booster: Any, what: str) -> bool:
    """Whether the booster predicts log-odds (True) or probabilities (False); refused when its
    objective is neither kind of binary classifier."""
    objective = booster_objective(flavor, booster)
    if objective in MARGIN_OBJECTIVES[flavor]:
        return True
    if objective in PROBABILITY_OBJECTIVES[flavor]:
        return False
    known = sorted(PROBABILITY_OBJECTIVES[flavor] | MARGIN_OBJECTIVES[flavor])
    raise ArtifactRefused(
        f"{what}: the {flavor} model's objective is {objective!r}; the platform serves binary "
        f"classifiers: one of {', '.join(known)}"
    )


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX binary classifier run by ONNX Runtime, with scikit-learn's scoring interface.
    Its one input takes rows x features (float32); its output `probabilities` (or its only
    output) is P(class 0), P(class 1) per row, or P(class 1) alone."""

    session: Any
    feature_names_in_: tuple[str, ...]
    output: str
    proto: Any  # the onnx.ModelProto, to log it

    def predict(self, rows: np.ndarray) -> np.ndarray:
        import numpy as np

        name = self.session.get_inputs()[0].name
        out = np.asarray(
            self.session.run([self.output], {name: rows.astype("float32")})[0], dtype="float64"
        )
        return out.reshape(len(rows), -1)[:, -1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return two_class_proba(self, X, "onnx")


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


def log_onnx(model: OnnxModel, signature: Any) -> ModelInfo:
    import mlflow

    proto = model.proto
    del proto.metadata_props[:]  # only the platform's own record of the features
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_FEATURES, ",".join(model.feature_names_in_)
    return mlflow.onnx.log_model(
        proto,
        name="model",
        save_as_external_data=False,
        pip_requirements=requirements("onnx", "onnxruntime"),
        signature=signature,
    )


def log_model(model: Any, X: pd.DataFrame) -> ModelInfo:
    """Log `model` as artifact `model` of the active MLflow run, in its flavor's safe format."""
    from mlflow.models import infer_signature

    signature = infer_signature(X.head(100), model.predict_proba(X.head(100)))
    if isinstance(model, OnnxModel):
        return log_onnx(model, signature)
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
        # XGBoost's first line says why; the rest is its native stack trace.
        reason = str(exc).splitlines()[0]
        raise ArtifactRefused(f"{what}: {name} is not an XGBoost model ({reason})") from exc
    booster.set_param({"nthread": 1})
    if not booster.feature_names:
        raise ArtifactRefused(
            f"{what}: the xgboost model {name} records no feature names (train it on the "
            "DataFrame, or set `feature_names`)"
        )
    margin = binary_link("xgboost", booster, what)
    return BoosterModel("xgboost", booster, tuple(booster.feature_names), margin)


def load_lightgbm(folder: Path, what: str) -> BoosterModel:
    """LightGBM's text model, parsed by LightGBM."""
    import lightgbm as lgb

    path = _model_file(folder, LIGHTGBM_FILE, what)
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ArtifactRefused(f"{what}: {LIGHTGBM_FILE} is not a LightGBM model ({exc})") from exc
    margin = binary_link("lightgbm", booster, what)
    return BoosterModel("lightgbm", booster, tuple(booster.feature_name()), margin)


def load_onnx(folder: Path, what: str) -> OnnxModel:
    """An ONNX model, parsed by ONNX (a protobuf: no code in it) and run by ONNX Runtime on
    one thread. Its feature names are the ones the platform wrote into it when it logged it
    (`ONNX_FEATURES`), and must be as many as its input's width."""
    import onnx
    import onnxruntime as ort
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    path = _model_file(folder, ONNX_FILE, what)
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
        external = [t.name for t in _get_all_tensors(proto) if uses_external_data(t)]
        if external:
            # Tensors kept in other files would be read from wherever they name.
            raise ArtifactRefused(
                f"{what}: the ONNX model keeps tensor(s) {', '.join(external)} in external "
                "files; the platform accepts a model in one file"
            )
        onnx.checker.check_model(proto)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except ArtifactRefused:
        raise
    except Exception as exc:  # onnx and onnxruntime raise their own many kinds
        raise ArtifactRefused(f"{what}: {ONNX_FILE} is not a usable ONNX model ({exc})") from exc
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    if len(inputs) != 1:
        raise ArtifactRefused(
            f"{what}: the ONNX model has {len(inputs)} inputs; the platform feeds it one "
            "(rows x features)"
        )
    output = "probabilities" if "probabilities" in outputs else outputs[0]
    if len(outputs) > 1 and output != "probabilities":
        raise ArtifactRefused(
            f"{what}: the ONNX model has outputs {', '.join(outputs)}; name the probabilities "
            "`probabilities` (skl2onnx does, with options={'zipmap': False})"
        )
    props = {p.key: p.value for p in proto.metadata_props}
    features = tuple(f for f in props.get(ONNX_FEATURES, "").split(",") if f)
    width = inputs[0].shape[-1] if inputs[0].shape else None
    if isinstance(width, int) and features and width != len(features):
        raise ArtifactRefused(
            f"{what}: the ONNX model's input takes {width} features, not the "
            f"{len(features)} it is registered for"
        )
    return OnnxModel(session, features, output, proto)


LOADERS = {
    SKOPS_FILE: load_sklearn,
    **{name: load_xgboost for name in XGBOOST_FILES},
    LIGHTGBM_FILE: load_lightgbm,
    ONNX_FILE: load_onnx,
}


def load_folder(folder: Path, what: str) -> Any:
    """The model in a verified folder, by the one model file it holds: `model.skops`
    (scikit-learn), `model.json` or `model.ubj` (XGBoost), `model.lgb` (LightGBM) or
    `model.onnx` (ONNX)."""
    found = sorted(name for name in LOADERS if (folder / name).exists())
    if len(found) != 1:
        held = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise ArtifactRefused(
            f"{what}: the artifact holds {held}; the platform loads exactly one of "
            f"{', '.join(LOADERS)} (never a pickle)"
        )
    return LOADERS[found[0]](folder, what)


def accept_trained(artifact: Path, features: tuple[str, ...], X: pd.DataFrame, what: str) -> Any:
    """The model a team's trainer returned (`artifact`, the one file of its flavor), loaded in
    the platform's process from the safe format only, and checked to be a binary classifier
    of exactly `features` that gives a probability for every row of `X`. The file's name, set
    by the platform from the declared flavor, chooses the loader: a file of another kind fails
    in that flavor's own parser."""
    import numpy as np

    # The backends return it alone in a folder only the platform writes.
    model = load_folder(artifact.parent, what)
    if isinstance(model, OnnxModel):
        width = model.session.get_inputs()[0].shape[-1]
        if isinstance(width, int) and width != len(features):
            raise ArtifactRefused(
                f"{what}: the ONNX model's input takes {width} features; the training set has "
                f"{len(features)} ({', '.join(features)})"
            )
        model = OnnxModel(model.session, features, model.output, model.proto)
    elif not hasattr(model, "predict_proba"):
        raise ArtifactRefused(f"{what}: a {type(model).__name__} has no predict_proba")
    expected = tuple(getattr(model, "feature_names_in_", ()))
    if expected != features:
        raise ArtifactRefused(
            f"{what}: the model expects features [{', '.join(map(str, expected))}], not the "
            f"training set's [{', '.join(features)}]"
        )
    try:
        proba = np.asarray(model.predict_proba(X), dtype="float64")
    except Exception as exc:  # whatever the flavor's library raises on this input
        raise ArtifactRefused(f"{what}: the model cannot score the training rows ({exc})") from exc
    if proba.shape != (len(X), 2) or not np.all((proba >= 0) & (proba <= 1)):
        raise ArtifactRefused(
            f"{what}: the model is not a binary classifier: its predict_proba gave shape "
            f"{proba.shape}, values outside [0, 1] or NaN; expected P(class 0), P(class 1)"
        )
    return model


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
