"""Drift benchmark: a model's drift over 1M logged requests x 20 features (target under 10 s).

Run with `.venv/bin/python -m bench.drift_bench` (`--rows`, `--features`, `--repeats`). The
request log is written in the agreed format (INTERFACES.md) with `LakeResource.append`, in
batches as serving flushes them, and the reference is a 100k-row training set. Timed, as the
drift asset does it: read the log's window from the lake, keep the champion's scored rows, then
PSI (quantile bins), KS and missing share per feature and for the score. The peers, measured
in the same run on the same data: the same statistics written the usual pandas way (`qcut`,
`value_counts`, scipy's `ks_2samp` with its defaults), and evidently's DataDriftPreset (PSI, then
KS) when `--evidently-python` names an interpreter that has it (it is not a dependency:
docs/monitoring.md says why). Prints medians and ratios; writes bench/results/drift_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "drift_bench.json"
TARGET_S = 10.0
REFERENCE_ROWS = 100_000
BATCHES = 20


def data(rows: int, features: int, seed: int = 0) -> tuple[dict, dict]:
    """Reference and recent columns: half the features shift a little, one a lot, 2% missing."""
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(features)]
    reference = {n: rng.normal(0, 1, REFERENCE_ROWS) for n in names}
    current = {}
    for i, n in enumerate(names):
        values = rng.normal(0.05 * (i % 2) + (1.0 if i == 0 else 0.0), 1, rows)
        values[rng.random(rows) < 0.02] = np.nan
        current[n] = values
    reference["score"] = rng.beta(2, 8, REFERENCE_ROWS)
    current["score"] = rng.beta(2.2, 8, rows)
    return reference, current


def write_log(lake, current: dict, rows: int) -> None:
    import pyarrow as pa

    now = datetime.now(UTC)
    step = rows // BATCHES
    for b in range(BATCHES):
        lo, hi = b * step, rows if b == BATCHES - 1 else (b + 1) * step
        n = hi - lo
        table = pa.table(
            {
                "request_id": pa.array(np.char.add("r", np.arange(lo, hi).astype(str))),
                "ts": pa.array(np.full(n, now), pa.timestamp("us", tz="UTC")),
                "tenant": pa.array(["bench"] * n),
                "model": pa.array(["m"] * n),
                "model_version": pa.array(np.ones(n, dtype="int64")),
                "status": pa.array(np.full(n, 200, dtype="int32")),
                "error": pa.nulls(n, pa.string()),
                "latency_ms": pa.array(np.full(n, 2.0)),
                "prediction": pa.array(current["score"][lo:hi]),
                "features_as_of": pa.array(np.full(n, now), pa.timestamp("us", tz="UTC")),
                "entity_id": pa.array(np.char.add("e", np.arange(lo, hi).astype(str))),
                **{k: pa.array(v[lo:hi]) for k, v in current.items() if k != "score"},
            }
        )
        lake.append("bench", "serving", "m", table)


def ours(lake, reference: dict, names: list[str], window_days: float) -> tuple[float, float]:
    """The drift asset's path: lake read, filter, statistics. Returns (wall, CPU) seconds: on a
    machine shared with other work the CPU time is what the computation itself costs."""
    import pyarrow.compute as pc

    from platform_assets.monitoring.assets import _columns
    from platform_assets.monitoring.drift import compare, compare_numeric

    started, cpu = time.perf_counter(), time.process_time()
    since = datetime.now(UTC) - timedelta(days=window_days)
    log = lake.batches("bench", "serving", "m", since=since)
    keep = pc.and_(
        pc.and_(pc.greater_equal(log["ts"], since), pc.is_valid(log["prediction"])),
        pc.equal(log["model_version"], 1),
    )
    log = log.filter(pc.fill_null(keep, False))
    current = _columns(log, [*names, "prediction"], "bench log")
    compare(reference, current, dict.fromkeys(names, "numeric"), 10)
    compare_numeric("score", reference["score"], current["prediction"], 10)
    return time.perf_counter() - started, time.process_time() - cpu


def pandas_peer(reference: dict, current: dict, names: list[str]) -> tuple[float, float]:
    """The same statistics as usually written with pandas and scipy's defaults."""
    import pandas as pd
    from scipy.stats import ks_2samp

    started, cpu = time.perf_counter(), time.process_time()
    ref, cur = pd.DataFrame(reference), pd.DataFrame(current)
    for name in [*names, "score"]:
        r, c = ref[name].dropna(), cur[name].dropna()
        _, edges = pd.qcut(r, 10, retbins=True, duplicates="drop")
        edges[0], edges[-1] = -np.inf, np.inf
        e = pd.cut(r, edges).value_counts(normalize=True, sort=False).clip(lower=1e-4)
        a = pd.cut(c, edges).value_counts(normalize=True, sort=False).clip(lower=1e-4)
        float(((a - e) * np.log(a / e)).sum())
        ks_2samp(r, c)
        float(cur[name].isna().mean() - ref[name].isna().mean())
    return time.perf_counter() - started, time.process_time() - cpu


EVIDENTLY = """
import json, sys, time
t0 = time.perf_counter()
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
import evidently
import_s = time.perf_counter() - t0
sys.path.insert(0, sys.argv[3])
from bench.drift_bench import data
import pandas as pd
reference, current = data(int(sys.argv[1]), int(sys.argv[2]))
ref, cur = pd.DataFrame(reference), pd.DataFrame(current)
definition = DataDefinition(numerical_columns=list(ref.columns))
out = {"version": evidently.__version__, "import_s": round(import_s, 2)}
for method in ("psi", "ks"):
    t = time.perf_counter()
    report = Report([DataDriftPreset(method=method)])
    report.run(Dataset.from_pandas(cur, data_definition=definition),
               Dataset.from_pandas(ref, data_definition=definition)).dict()
    out[method + "_s"] = round(time.perf_counter() - t, 2)
print(json.dumps(out))
"""


def evidently_peer(python: str, rows: int, features: int) -> dict:
    """evidently in its own interpreter (its dependencies are not the platform's)."""
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [python, "-c", EVIDENTLY, str(rows), str(features), root],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-python", default=os.environ.get("MLPLAT_EVIDENTLY_PYTHON"))
    args = parser.parse_args()

    from platform_assets.resources.lake import LakeResource

    reference, current = data(args.rows, args.features)
    names = [n for n in reference if n != "score"]
    with tempfile.TemporaryDirectory(prefix="mlplat-drift-") as tmp:
        lake = LakeResource(root=str(Path(tmp) / "lake"))
        write_log(lake, current, args.rows)
        ours(lake, reference, names, 7)  # warm: imports, page cache
        timings = [ours(lake, reference, names, 7) for _ in range(args.repeats)]
    peers = [pandas_peer(reference, current, names) for _ in range(args.repeats)]
    ours_s, ours_cpu = (statistics.median(t[i] for t in timings) for i in (0, 1))
    peer_s, peer_cpu = (statistics.median(t[i] for t in peers) for i in (0, 1))
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine_cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "rows": args.rows,
        "features": args.features,
        "reference_rows": REFERENCE_ROWS,
        "log_batches": BATCHES,
        "repeats": args.repeats,
        "drift_s_median": round(ours_s, 3),
        "drift_cpu_s_median": round(ours_cpu, 3),
        "target_s": TARGET_S,
        "pandas_peer_s_median": round(peer_s, 3),
        "pandas_peer_cpu_s_median": round(peer_cpu, 3),
        "pandas_peer_over_ours": round(peer_s / ours_s, 2),
    }
    print(
        f"drift over {args.rows:,} logged requests x {args.features} features "
        f"(reference {REFERENCE_ROWS:,} rows), median of {args.repeats}:"
    )
    print(
        f"  mlplat (lake read + PSI, KS, missing per feature and score): {ours_s:.2f} s "
        f"wall, {ours_cpu:.2f} s CPU (target < {TARGET_S:.0f} s, ratio to target "
        f"{ours_s / TARGET_S:.2f}; load average {result['load_average_1m']})"
    )
    print(
        f"  pandas qcut/value_counts + scipy defaults (in memory, no lake read): {peer_s:.2f} s"
        f" wall, {peer_cpu:.2f} s CPU = {peer_s / ours_s:.2f}x ours"
    )
    if args.evidently_python:
        ev = evidently_peer(args.evidently_python, args.rows, args.features)
        result["evidently"] = ev
        result["evidently_psi_over_ours"] = round(ev["psi_s"] / ours_s, 1)
        print(
            f"  evidently {ev['version']} DataDriftPreset (in memory): PSI {ev['psi_s']:.1f} s "
            f"= {ev['psi_s'] / ours_s:.1f}x ours, KS {ev['ks_s']:.1f} s; import "
            f"{ev['import_s']:.1f} s"
        )
    else:
        print(
            "  evidently: not a dependency; pass --evidently-python PATH (an interpreter "
            "with evidently installed) to measure it here"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
