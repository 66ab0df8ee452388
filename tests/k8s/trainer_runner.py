"""The trainer image's runner as the Kubernetes tests run it, until models/trainers/runner.py
(built with the sandbox backend) is merged here: the same contract (Pipes extras: entrypoint,
sys_path, flavor, label, features, params, input, output; `train(df, *, label, features,
params)`; exit 2 with an `mlplat-trainer-error:` line when it refuses), wrapped in the one call
a pod adds, `transfer.staged`. xgboost only: what the tests train."""

import importlib
import shutil
import sys
import tempfile

import transfer
from dagster_pipes import open_dagster_pipes


def main() -> int:
    with open_dagster_pipes() as pipes:
        try:
            with transfer.staged(pipes.extras) as extras:
                import pandas as pd

                sys.path[:0] = extras["sys_path"]
                module, _, name = extras["entrypoint"].partition(":")
                function = getattr(importlib.import_module(module), name)
                features, label = list(extras["features"]), extras["label"]
                df = pd.read_parquet(extras["input"], columns=[*features, label])
                model = function(df, label=label, features=features, params=extras["params"])
                scratch = tempfile.mkdtemp() + "/model.json"
                model.save_model(scratch)
                shutil.copyfile(scratch, extras["output"])
        except transfer.TransferError as exc:
            sys.stderr.write(f"mlplat-trainer-error: {exc}\n")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
