"""Trainer sandbox benchmark: what the bubblewrap sandbox adds to a team trainer's start-up.

Run with `.venv/bin/python -m bench.trainer_bench` (`--repeats`). A trivial trainer (it returns
a few bytes as an `onnx` model, so no ML library loads) runs in one Dagster step, alternately:
in the sandbox (`run_in_sandbox`), and as the same runner in the same environment without
the sandbox (a plain subprocess with the same Pipes context and a Pipes temp-file reader). The
environment is built first (not timed). Times are the trainer process's wall time, runner
start to exit, and the whole call. Prints medians and the ratio; writes
bench/results/trainer_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from platform_assets.models.trainers.environment import trainer_environment
from platform_assets.models.trainers.job import TrainerJob
from platform_assets.models.trainers.sandbox import RUNNER, run_in_sandbox
from platform_assets.tenancy.catalog import code_source_root

RESULTS = Path(__file__).parent / "results" / "trainer_bench.json"
TRAINER = "def train(df, *, label, features, params):\n    return b'not a model'\n"


def _job(root: Path) -> TrainerJob:
    package = root / "code" / "bench_models"
    package.mkdir(parents=True)
    (root / "code" / "pyproject.toml").write_text(
        '[project]\nname = "bench-models"\nversion = "0"\ndependencies = []\n'
    )
    (package / "__init__.py").write_text("")
    (package / "trivial.py").write_text(TRAINER)
    return TrainerJob(
        tenant="bench",
        model="trivial",
        source=root / "trivial.yaml",
        code_dir=root / "code",
        entrypoint="bench_models.trivial:train",
        flavor="onnx",
        params={},
        label="y",
        features=("x",),
        cpu=1.0,
        memory_gib=2.0,
        timeout_s=120.0,
        artifact_bytes=2**20,
        tmp_bytes=64 * 2**20,
    )


def _unsandboxed(context, job: TrainerJob, env: Path, train: Path, out: Path) -> float:
    extras = {
        "entrypoint": job.entrypoint,
        "sys_path": [str(code_source_root(job.code_dir))],
        "flavor": job.flavor,
        "label": job.label,
        "features": list(job.features),
        "params": job.params,
        "input": str(train),
        "output": str(out),
    }
    with dg.open_pipes_session(
        context=context,
        context_injector=dg.PipesFileContextInjector(str(out.with_name("context.json"))),
        message_reader=dg.PipesTempFileMessageReader(),
        extras=extras,
    ) as session:
        started = time.monotonic()
        subprocess.run(
            [str(env / "bin" / "python"), "-I", "-B", str(RUNNER)],
            env=dict(session.get_bootstrap_env_vars()),
            check=True,
        )
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLPLAT_DATA"] = str(root / "data")
        job = _job(root)
        env = trainer_environment(job)
        frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
        frame.to_parquet(root / "train.parquet")
        times: dict[str, list[float]] = {"sandbox": [], "sandbox_call": [], "unsandboxed": []}

        @dg.asset
        def bench(context):  # (no annotation: Dagster checks it, and it is a string here)
            for i in range(args.repeats):
                started = time.monotonic()
                output = run_in_sandbox(context, job, frame)
                times["sandbox_call"].append(time.monotonic() - started)
                times["sandbox"].append(output.wall_s)
                shutil.rmtree(output.artifact.parent)  # as the model step does
                out = root / f"run{i}" / "model.onnx"
                out.parent.mkdir()
                times["unsandboxed"].append(
                    _unsandboxed(context, job, env, root / "train.parquet", out)
                )
            return dg.MaterializeResult()

        with dg.instance_for_test():
            assert dg.materialize([bench]).success
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "repeats": args.repeats,
        "median_s": medians,
        "ratio": medians["sandbox"] / medians["unsandboxed"],
        "overhead_s": medians["sandbox"] - medians["unsandboxed"],
        "runs_s": times,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"trivial trainer, median of {args.repeats}:")
    print(f"  sandboxed process   {medians['sandbox'] * 1000:8.1f} ms")
    print(f"  whole sandbox call  {medians['sandbox_call'] * 1000:8.1f} ms (env lookup, parquet)")
    print(f"  unsandboxed process {medians['unsandboxed'] * 1000:8.1f} ms")
    print(f"  ratio {result['ratio']:.2f}x, overhead {result['overhead_s'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
