"""The script the platform runs inside a trainer's sandbox (or pod), in the team's environment.

It imports no platform code: only the standard library, dagster_pipes, pandas (with pyarrow)
and, lazily, the flavor's library. Everything it needs comes from the Pipes context's extras:

    entrypoint  "package.module:function" in the team's code
    sys_path    folders to put first on sys.path (the team's source, read-only)
    flavor      xgboost | lightgbm | sklearn | onnx
    label       the label column's name
    features    the feature columns' names
    params      the model YAML's `trainer.params`
    input       the training split, a parquet file (path)
    output      where the model file goes (path; the sandbox passes a pipe, /dev/fd/3)

The team's function is called as

    train(df, *, label="<label>", features=["<f1>", ...], params={...}) -> model

with `df` a pandas DataFrame of the feature columns and the label column (the training split
only), and returns the fitted model: for xgboost an `xgboost.Booster` or `XGBModel`, for
lightgbm a `lightgbm.Booster` or `LGBMModel`, for sklearn an estimator (saved with skops, which
the project must depend on), for onnx an `onnx.ModelProto` or its serialized bytes. The model
is written in its flavor's safe format (xgboost JSON, LightGBM's text model, skops, ONNX). The
team's code may log to Dagster with `dagster_pipes.PipesContext.get().log.info(...)` and report
metadata with `PipesContext.get().report_custom_message(...)`.

Exit codes: 0 written; 1 the team's code raised (its traceback is on stderr); 2 the runner
refused (one `mlplat-trainer-error:` line on stderr says why).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from dagster_pipes import open_dagster_pipes

# `python -I` leaves the runner's own folder off sys.path; transfer.py is shipped beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import transfer  # noqa: E402  (the runner's sibling, stdlib only: pre-signed URLs on a pod)

ERROR_PREFIX = "mlplat-trainer-error: "


class RunnerError(Exception):
    """A problem the runner names itself (no team traceback needed)."""


def main() -> int:
    with open_dagster_pipes() as pipes:
        try:
            # Paths in the sandbox; on a pod, pre-signed requests staged as local paths.
            with transfer.staged(pipes.extras) as extras:
                model = train(extras)
                write_model(model, extras["flavor"], extras["output"])
        except (RunnerError, transfer.TransferError) as exc:
            sys.stderr.write(f"{ERROR_PREFIX}{exc}\n")
            return 2
    return 0


def train(extras: dict[str, Any]) -> Any:
    entrypoint = extras["entrypoint"]
    module_name, _, function_name = entrypoint.partition(":")
    sys.path[:0] = extras["sys_path"]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # an import inside the team's module failed: its traceback says which
        raise RunnerError(
            f"entrypoint {entrypoint}: no module {module_name!r} in the team's code/ "
            f"(searched {', '.join(extras['sys_path'])})"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RunnerError(
            f"entrypoint {entrypoint}: module {module_name!r} has no function {function_name!r}"
        )
    import pandas as pd

    features, label = list(extras["features"]), extras["label"]
    df = pd.read_parquet(extras["input"], columns=[*features, label])
    return function(df, label=label, features=features, params=dict(extras["params"]))


def write_model(model: Any, flavor: str, output: str) -> None:
    """Save `model` in its flavor's safe format to a scratch file, then copy it to `output`
    (which may be a pipe: the flavors' writers seek)."""
    scratch = Path(tempfile.mkdtemp()) / {"xgboost": "model.json"}.get(flavor, "model")
    if flavor == "xgboost":
        xgb = sys.modules.get("xgboost")
        if xgb is None or not isinstance(model, xgb.Booster | xgb.XGBModel):
            _wrong_type(flavor, model, "an xgboost.Booster or xgboost.XGBModel")
        model.save_model(str(scratch))
    elif flavor == "lightgbm":
        lgb = sys.modules.get("lightgbm")
        if lgb is None or not isinstance(model, lgb.Booster | lgb.LGBMModel):
            _wrong_type(flavor, model, "a lightgbm.Booster or lightgbm.LGBMModel")
        booster = model if isinstance(model, lgb.Booster) else model.booster_
        booster.save_model(str(scratch))
    elif flavor == "sklearn":
        base = sys.modules.get("sklearn.base")
        if base is None or not isinstance(model, base.BaseEstimator):
            _wrong_type(flavor, model, "a scikit-learn estimator")
        try:
            import skops.io
        except ImportError:
            raise RunnerError(
                "flavor sklearn: models are saved with skops; add skops to the dependencies "
                "in code/pyproject.toml"
            ) from None
        skops.io.dump(model, scratch)
    elif flavor == "onnx":
        if isinstance(model, bytes | bytearray):
            scratch.write_bytes(model)
        else:
            onnx = sys.modules.get("onnx")
            if onnx is None or not isinstance(model, onnx.ModelProto):
                _wrong_type(flavor, model, "an onnx.ModelProto or its serialized bytes")
            scratch.write_bytes(model.SerializeToString())
    else:
        raise RunnerError(f"unknown flavor {flavor!r}")
    with open(scratch, "rb") as src, open(output, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _wrong_type(flavor: str, model: Any, expected: str) -> None:
    kind = type(model)
    raise RunnerError(
        f"flavor {flavor}: the trainer returned {kind.__module__}.{kind.__qualname__}; "
        f"expected {expected}"
    )


if __name__ == "__main__":
    sys.exit(main())
