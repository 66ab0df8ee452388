"""Metrics benchmark: one `/metrics` scrape at 100 tenants and 100k runs, against a naive
exporter that reads every run on each scrape.

Run with `.venv/bin/python -m bench.metrics_bench` (`--tenants`, `--runs`, `--repeats`). It
writes the tenants' YAML (bench/scale_bench.py's generator, plus freshness SLOs) into a temporary
defs root, then inserts the run records straight into the run storage in one transaction, with
the column values `add_historical_run` writes (one `add_run` per run commits 100k times),
spread over the last week with a mix of outcomes (`add_historical_run`'s values without its
per-run schema inspection, which alone takes minutes at 100k). Each tenant gets one
request-log batch and each asset a materialization. Between scrapes it materializes an asset
(a real run) and reports a materialization, so every scrape does an incremental read. Prints
medians and the ratio; JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import yaml

from bench.scale_bench import generate_tenants

RESULTS = Path(__file__).resolve().parent / "results"
SLOS = {
    "run_success": {"target": 0.95, "window_days": 7},
    "freshness": {
        "feature_view": {"fail_after_hours": 26, "warn_after_hours": 24},
        "model": {"fail_after_hours": 192},
    },
}
OUTCOMES = [dg.DagsterRunStatus.SUCCESS] * 18 + [dg.DagsterRunStatus.FAILURE]


def add_slos(root: Path) -> None:
    for path in root.glob("*/tenant/defs.yaml"):
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["slos"] = SLOS
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def insert_runs(instance: dg.DagsterInstance, tenants: list[str], count: int, rng) -> float:
    """`count` finished runs (a few still running) in one transaction; returns seconds taken."""
    from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
    from dagster._serdes import serialize_value

    started = time.perf_counter()
    storage = instance.run_storage
    now = datetime.now(UTC)
    runs, tags = [], []
    for i in range(count):
        tenant = tenants[i % len(tenants)]
        status = dg.DagsterRunStatus.STARTED if i % 997 == 0 else rng.choice(OUTCOMES)
        run = dg.DagsterRun(
            job_name=f"{tenant}_pipeline",
            run_id=str(uuid.uuid4()),
            status=status,
            # As Dagster tags a run launched from the tenant's code location.
            tags={"tenant": tenant, "dagster/code_location": tenant},
        )
        created = now - timedelta(seconds=rng.uniform(60, 6.5 * 86400))
        start = created + timedelta(seconds=rng.expovariate(1 / 20))
        end = min(start + timedelta(seconds=rng.uniform(30, 900)), now - timedelta(seconds=1))
        finished = status != dg.DagsterRunStatus.STARTED
        runs.append(
            {
                "run_id": run.run_id,
                "pipeline_name": run.job_name,
                "status": status.value,
                "run_body": serialize_value(run),
                "create_timestamp": created.replace(tzinfo=None),
                "update_timestamp": (end if finished else start).replace(tzinfo=None),
                "start_time": start.timestamp(),
                "end_time": end.timestamp() if finished else None,
            }
        )
        tags += [{"run_id": run.run_id, "key": k, "value": v} for k, v in run.tags.items()]
    with storage.connect() as conn:
        conn.execute(RunsTable.insert(), runs)
        conn.execute(RunTagsTable.insert(), tags)
    return time.perf_counter() - started


def request_log(tenant: str, rows: int, rng) -> pa.Table:
    now = datetime.now(UTC)
    return pa.table(
        {
            "request_id": [f"r{i // 2}" for i in range(rows)],
            "ts": pa.array([now] * rows, pa.timestamp("us", tz="UTC")),
            "tenant": [tenant] * rows,
            "model": ["m"] * rows,
            "model_version": pa.array([1] * rows, pa.int64()),
            "status": pa.array([200] * rows, pa.int32()),
            "error": pa.array([None] * rows, pa.string()),
            "latency_ms": [rng.uniform(2, 30) for _ in range(rows)],
            "prediction": [rng.random() for _ in range(rows)],
            "features_as_of": pa.array([now] * rows, pa.timestamp("us", tz="UTC")),
            "entity_id": [str(i) for i in range(rows)],
        }
    )


def bench_asset(tenant: str) -> dg.AssetsDefinition:
    @dg.asset(key=[tenant, "sources", "bench"])
    def bench() -> None:
        return None

    return bench


def naive_scrape(instance: dg.DagsterInstance) -> int:
    """What an exporter without state does: read every run, aggregate, per scrape."""
    from collections import Counter

    finished, waits = Counter(), Counter()
    for record in instance.get_run_records():
        run = record.dagster_run
        finished[(run.tags.get("tenant"), run.job_name, run.status.value)] += 1
        if record.start_time is not None:
            waits[run.tags.get("tenant")] += record.start_time - record.create_timestamp.timestamp()
    return len(finished)


def scrape(port: int) -> int:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        text = response.read().decode()
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(15)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "defs"
        generate_tenants(root, args.tenants)
        add_slos(root)
        saved = {k: os.environ.get(k) for k in ("MLPLAT_DEFS_ROOT", "MLPLAT_DATA", "MLPLAT_ENV")}
        os.environ.update({"MLPLAT_DEFS_ROOT": str(root), "MLPLAT_DATA": str(tmp_path / "data")})
        os.environ["MLPLAT_ENV"] = "local"
        try:
            result = run(tmp_path, root, args, rng)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "metrics_bench.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


def run(tmp_path: Path, root: Path, args, rng) -> dict:
    from platform_assets.composition.locations import tenant_assets
    from platform_assets.observability.exporter import PlatformState, Tenants, serve
    from platform_assets.resources.deployment import resources_for
    from platform_assets.services.stack import free_port

    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        tenants = sorted(p.name for p in root.iterdir())
        generate_s = insert_runs(instance, tenants, args.runs, rng)
        lake = resources_for("local")["lake"]
        for tenant in tenants:
            lake.append(tenant, "serving", "m", request_log(tenant, 200, rng))
        for tenant in tenants:
            for kind, name in [("features", "f0"), ("models", "m")]:
                instance.report_runless_asset_event(dg.AssetMaterialization([tenant, kind, name]))

        started = time.perf_counter()
        loaded = Tenants.load(tenant_assets, root)
        load_s = time.perf_counter() - started
        state = PlatformState(instance, loaded, lake, lake_interval=0)
        started = time.perf_counter()
        server, thread = serve(state, "127.0.0.1", free_port())  # the first read: the history
        cold_s = time.perf_counter() - started
        ours, naive = [], []
        try:
            for i in range(args.repeats):
                # One real run (its own events, as a step of the tenant's would leave) and a
                # materialization of an asset with a freshness policy.
                tenant = tenants[i % len(tenants)]
                assert dg.materialize(
                    [bench_asset(tenant)], instance=instance, tags={"tenant": tenant}
                ).success
                instance.report_runless_asset_event(
                    dg.AssetMaterialization([tenant, "models", "m"])
                )
                started = time.perf_counter()
                samples = scrape(server.server_port)
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                naive_scrape(instance)
                naive.append(time.perf_counter() - started)
        finally:
            server.shutdown()
            thread.join(timeout=10)
        counted = sum(state.finished.values())

    ours_s, naive_s = statistics.median(ours), statistics.median(naive)
    return {
        "tenants": args.tenants,
        "runs": args.runs,
        "finished_runs_counted": counted,
        "samples_per_scrape": samples,
        "generate_runs_s": round(generate_s, 2),
        "load_tenants_s": round(load_s, 2),
        "first_read_s": round(cold_s, 2),
        "scrape_median_s": round(ours_s, 4),
        "naive_full_scan_median_s": round(naive_s, 4),
        "naive_over_ours": round(naive_s / ours_s, 1),
        "target_s": 1.0,
        "meets_target": ours_s < 1.0,
    }


if __name__ == "__main__":
    main()
