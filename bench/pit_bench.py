"""Point-in-time benchmark: AsofOfflineStore against raw DuckDB, Feast's duckdb store and polars.

`python -m bench.pit_bench` (what `make bench` runs) measures, in one run: 2M x 500k and
10M x 1M feature x entity rows in two shapes (~15 and ~300 rows per key inside the 7-day TTL),
a retrieval of 5 feature views at once, 30M x 3M (ours only: does it finish, in how much
memory) and `materialize` of 1M rows into Redis. `--only NAME[,NAME]` picks cases.
Every measurement runs in its own child process, so peak memory (ru_maxrss) belongs to one
engine; rounds alternate the engines so load from elsewhere hits them alike. Data and JSON
results go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TTL = timedelta(days=7)
SPAN_DAYS = 90  # feature and entity times are spread over this many days
HOUR_US = 3_600_000_000
START_US = 1_704_067_200_000_000  # 2024-01-01 UTC
FEATURES = ["conv_rate", "acc_rate", "trips"]
ENGINES = ["asof", "duckdb_raw", "feast_duckdb", "polars"]
# Feast's duckdb store range-joins every entity row with every row of its key inside the TTL,
# so its time and memory grow with rows per key; it is stopped at this guard.
TIMEOUT_S = {"feast_duckdb": 240}
FEAST_DUCKDB_MEMORY = "6GB"
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Case:
    name: str
    feature_rows: int
    entity_rows: int
    in_ttl: int  # rows per key inside the TTL window
    views: int = 1
    engines: tuple[str, ...] = tuple(ENGINES)
    rounds: int = 3

    @property
    def rows_per_key(self) -> int:
        return round(self.in_ttl * SPAN_DAYS / TTL.days)

    @property
    def keys(self) -> int:
        return max(1, self.feature_rows // self.rows_per_key)

    @property
    def directory(self) -> Path:
        return RESULTS / f"data_{self.feature_rows}x{self.entity_rows}_{self.in_ttl}inttl"


CASES = {
    c.name: c
    for c in [
        Case("2Mx500k-15", 2_000_000, 500_000, 15),
        Case("2Mx500k-300", 2_000_000, 500_000, 300),
        Case("10Mx1M-15", 10_000_000, 1_000_000, 15),
        Case("10Mx1M-300", 10_000_000, 1_000_000, 300),
        Case("2Mx500k-15-5views", 2_000_000, 500_000, 15, views=5),
        Case("30Mx3M-15", 30_000_000, 3_000_000, 15, engines=("asof",), rounds=1),
        # Not in the default run: a quick check that every engine and path works.
        Case("smoke-5views", 200_000, 20_000, 15, views=5, rounds=1),
    ]
}
DEFAULT_CASES = [name for name in CASES if not name.startswith("smoke")]
MATERIALIZE_ROWS, MATERIALIZE_KEYS = 1_000_000, 100_000


def _write_sorted(path: Path, n: int, keys: int, seed: int) -> None:
    """Feature rows (hourly event times, created 0-2 s later, so ties on both), written the way
    the platform writes feature tables (`layout_for_join`), one key range at a time so that
    30M rows never sit in memory at once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from platform_assets.features.offline_store import LAYOUT_ROW_GROUP_ROWS, layout_for_join

    rng = np.random.default_rng(seed)
    chunks = max(1, n // 2_000_000)
    bounds = np.linspace(0, keys, chunks + 1).astype(np.int64)
    writer = None
    tmp = path.with_suffix(".tmp")
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = n * int(hi - lo) // keys
        ts = START_US + rng.integers(0, SPAN_DAYS * 24, rows) * HOUR_US
        table = pa.table(
            {
                "driver_id": rng.integers(lo, hi, rows),
                "event_timestamp": pa.array(ts, pa.timestamp("us")),
                "created": pa.array(ts + rng.integers(0, 3, rows) * 1_000_000, pa.timestamp("us")),
                "conv_rate": rng.random(rows),
                "acc_rate": rng.random(rows).astype("float32"),
                "trips": rng.integers(0, 1000, rows),
            }
        )
        table = layout_for_join(table, ["driver_id"], "event_timestamp", "created")
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=LAYOUT_ROW_GROUP_ROWS)
    writer.close()
    tmp.rename(path)


def generate(case: Case) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = case.directory
    directory.mkdir(parents=True, exist_ok=True)
    for view in range(case.views):
        path = directory / f"features_{view}.parquet"
        if not path.exists():
            _write_sorted(path, case.feature_rows, case.keys, seed=42 + view)
    entities = directory / "entities.parquet"
    if not entities.exists():
        rng = np.random.default_rng(7)
        m = case.entity_rows
        table = pa.table(
            {
                # A few percent of keys have no feature rows at all.
                "driver_id": rng.integers(0, int(case.keys * 1.03) + 1, m),
                "event_timestamp": pa.array(
                    START_US + rng.integers(0, SPAN_DAYS * 24 * HOUR_US, m), pa.timestamp("us")
                ),
            }
        )
        pq.write_table(table, entities)
    return directory


def _feast_repo(directory: Path, engine: str, views: int, online: dict | None = None) -> Path:
    import yaml
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64

    from platform_assets.features.offline_store import STORE_TYPE, feature_store_yaml

    repo = directory / f"repo_{engine}_{views}{'_redis' if online else ''}"
    repo.mkdir(exist_ok=True)
    config = yaml.safe_load(
        feature_store_yaml(f"bench_{engine}", repo, repo / "registry.db", repo / "online.db")
    )
    if engine != "asof":
        config["offline_store"] = {"type": engine.removeprefix("feast_")}
        # Feast's own stores get Feast's default: entity timestamps coerced to UTC first.
        del config["coerce_tz_aware"]
    else:
        assert config["offline_store"]["type"] == STORE_TYPE
    if online:
        config["online_store"] = online
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    objects: list = [driver]
    for view in range(views):
        objects.append(
            FeatureView(
                name=f"driver_stats_{view}",
                entities=[driver],
                ttl=TTL,
                schema=[
                    Field(name="driver_id", dtype=Int64),
                    Field(name="conv_rate", dtype=Float64),
                    Field(name="acc_rate", dtype=Float32),
                    Field(name="trips", dtype=Int64),
                ],
                source=FileSource(
                    name=f"driver_stats_source_{view}",
                    path=str(directory / f"features_{view}.parquet"),
                    timestamp_field="event_timestamp",
                    created_timestamp_column="created",
                ),
            )
        )
    FeatureStore(repo_path=str(repo)).apply(objects)
    return repo


def _retrieval(engine: str, directory: Path, views: int):
    """A function running one retrieval with `engine`; returns (rows, matched rows of view 0)."""
    import pandas as pd

    entity_df = pd.read_parquet(directory / "entities.parquet")
    paths = [directory / f"features_{v}.parquet" for v in range(views)]
    ttl_s = int(TTL.total_seconds())
    if engine == "duckdb_raw":
        import duckdb

        con = duckdb.connect()
        con.register("entity_df", entity_df)
        select, joins = ["e.*"], []
        for v, path in enumerate(paths):
            fresh = f"f{v}.event_timestamp >= e.event_timestamp - INTERVAL {ttl_s} SECOND"
            select += [f"CASE WHEN {fresh} THEN f{v}.{c} END AS {c}_{v}" for c in FEATURES]
            joins.append(
                f"ASOF LEFT JOIN read_parquet('{path}') f{v} ON e.driver_id = f{v}.driver_id "
                f"AND e.event_timestamp >= f{v}.event_timestamp"
            )
        sql = f"SELECT {', '.join(select)} FROM entity_df e {' '.join(joins)}"

        def run():
            out = con.sql(sql).to_arrow_table()
            return out.num_rows, out.num_rows - out.column("trips_0").null_count

    elif engine == "polars":
        import polars as pl

        def run():
            out = pl.from_pandas(entity_df).sort("event_timestamp")
            for v, path in enumerate(paths):
                features = (
                    pl.read_parquet(path, columns=["driver_id", "event_timestamp", *FEATURES])
                    .rename({c: f"{c}_{v}" for c in FEATURES})
                    .sort("event_timestamp")
                )
                out = out.join_asof(
                    features,
                    on="event_timestamp",
                    by="driver_id",
                    strategy="backward",
                    tolerance=f"{ttl_s}s",
                )
            return out.height, out.height - out["trips_0"].null_count()

    else:
        from feast import FeatureStore

        if engine == "feast_duckdb":
            import ibis

            # A guard for the shared machine: Feast's range join holds every entity row's
            # candidates at once (many GiB at ~300 rows per key); DuckDB spills beyond this.
            backend = ibis.get_backend()
            backend.raw_sql(f"SET memory_limit = '{FEAST_DUCKDB_MEMORY}'")
            backend.raw_sql(f"SET temp_directory = '{RESULTS / 'duckdb_spill'}'")
        store = FeatureStore(repo_path=str(_feast_repo(directory, engine, views)))
        refs = [f"driver_stats_{v}:{f}" for v in range(views) for f in FEATURES]

        def run():
            out = store.get_historical_features(
                entity_df=entity_df, features=refs, full_feature_names=True
            ).to_arrow()
            return out.num_rows, out.num_rows - out.column("driver_stats_0__trips").null_count

    return run, len(entity_df)


def _materialize(engine: str, directory: Path, redis_url: str):
    import redis
    from feast import FeatureStore

    parsed = redis.Redis.from_url(redis_url)
    kwargs = parsed.connection_pool.connection_kwargs
    connection = f"{kwargs['host']}:{kwargs['port']},db={kwargs.get('db', 0)}"
    online = {"type": "redis", "connection_string": connection}
    store = FeatureStore(repo_path=str(_feast_repo(directory, engine, 1, online)))
    start = datetime(2023, 12, 31, tzinfo=UTC)
    end = datetime(2024, 4, 1, tzinfo=UTC)

    def run():
        parsed.flushdb()  # the benchmark's own Redis database (MLPLAT_BENCH_REDIS_URL)
        store.materialize(start_date=start, end_date=end)
        return parsed.dbsize(), parsed.dbsize()

    return run, MATERIALIZE_KEYS


def child(engine: str, directory: Path, views: int, warmup: int, repeats: int, redis_url: str):
    """Run one engine `repeats` times in this process; report wall times and peak RSS."""
    if views == 0:
        run, entity_rows = _materialize(engine, directory, redis_url)
    else:
        run, entity_rows = _retrieval(engine, directory, views)
    for _ in range(warmup):
        run()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, rows, matched = [], 0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        rows, matched = run()
        times.append(time.perf_counter() - start)
    return {
        "engine": engine,
        "times_s": times,
        "rows": rows,
        "matched": matched,
        "entity_rows": entity_rows,
        "baseline_rss_bytes": baseline_rss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def measure(engine: str, directory: Path, views: int, redis_url: str, warmup: int) -> dict:
    cmd = [sys.executable, "-m", "bench.pit_bench", "--child", engine, "--data", str(directory)]
    cmd += ["--views", str(views), "--warmup", str(warmup), "--redis-url", redis_url]
    timeout = TIMEOUT_S.get(engine, DEFAULT_TIMEOUT_S)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": f"stopped at the {timeout} s guard"}
    except subprocess.CalledProcessError as e:
        return {"engine": engine, "error": (e.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def merge(runs: list[dict]) -> dict:
    """One engine's rounds as one result: all timings, the highest peak memory."""
    good = [r for r in runs if "times_s" in r]
    if not good:
        return runs[-1]
    merged = dict(good[-1])
    merged["times_s"] = [t for r in good for t in r["times_s"]]
    merged["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in good)
    return merged


def table(title: str, results: list[dict], unit: str = "rows matched") -> str:
    walls = {r["engine"]: statistics.median(r["times_s"]) for r in results if "times_s" in r}
    base, raw = walls.get("asof"), walls.get("duckdb_raw")
    lines = [
        title,
        "",
        "| engine | wall median (s) | runs | time / ours | time / raw DuckDB | peak RSS (GiB) "
        f"| {unit} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['error']} | | | | | |")
            continue
        wall = walls[r["engine"]]
        ours = f"{wall / base:.2f}x" if base else ""
        to_raw = f"{wall / raw:.2f}x" if raw else ""
        lines.append(
            f"| {r['engine']} | {wall:.3f} | {len(r['times_s'])} | {ours} | {to_raw} | "
            f"{r['peak_rss_bytes'] / 2**30:.2f} | {r['matched']:,} of {r['entity_rows']:,} |"
        )
    return "\n".join(lines)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _commit() -> str:
    """The commit measured, marked dirty when the store or the bench differ from it."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "platform_assets/features", "bench"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {head}{' (modified)' if dirty else ''}"


def _run_case(case: Case, redis_url: str) -> list[dict]:
    directory = generate(case)
    runs: dict[str, list[dict]] = {e: [] for e in case.engines}
    for round_no in range(case.rounds):
        for engine in case.engines:
            if runs[engine] and "error" in runs[engine][-1]:
                continue  # a timeout is not retried
            # One untimed run first, except for Feast's store (seconds to minutes a run).
            warmup = 0 if engine == "feast_duckdb" or case.rounds == 1 else 1
            runs[engine].append(measure(engine, directory, case.views, redis_url, warmup))
            print(f"  {case.name} round {round_no} {json.dumps(runs[engine][-1])}", flush=True)
    return [merge(runs[e]) for e in case.engines]


def _run_materialize(redis_url: str, rounds: int = 3) -> list[dict]:
    directory = RESULTS / "data_materialize_1M"
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "features_0.parquet").exists():
        # 10 rows per key over 90 days.
        _write_sorted(directory / "features_0.parquet", MATERIALIZE_ROWS, MATERIALIZE_KEYS, 42)
    runs: dict[str, list[dict]] = {"asof": [], "feast_duckdb": []}
    for round_no in range(rounds):
        for engine in runs:
            runs[engine].append(measure(engine, directory, 0, redis_url, warmup=0))
            print(f"  materialize round {round_no} {json.dumps(runs[engine][-1])}", flush=True)
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # leave the benchmark's database empty
    return [merge(r) for r in runs.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", help="comma-separated cases: " + ", ".join([*CASES, "materialize"])
    )
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--views", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("MLPLAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"),
        help="Redis database the materialize case may flush (default db 4, or "
        "MLPLAT_BENCH_REDIS_URL)",
    )
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.data, args.views, args.warmup, 1, args.redis_url)
        print(json.dumps(result))
        return

    wanted = args.only.split(",") if args.only else [*DEFAULT_CASES, "materialize"]
    unknown = [w for w in wanted if w not in CASES and w != "materialize"]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {[*CASES, 'materialize']}")
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
        f"{_commit()}, {_load()}"
    )
    print(header, flush=True)
    report: dict = {"header": header, "cases": {}}
    for name in wanted:
        if name == "materialize":
            results = _run_materialize(args.redis_url)
            title = (
                f"materialize: {MATERIALIZE_ROWS:,} feature rows, {MATERIALIZE_KEYS:,} keys, into "
                f"Redis ({args.redis_url}), pull_latest_features"
            )
            text = table(title, results, unit="keys in Redis")
        else:
            case = CASES[name]
            results = _run_case(case, args.redis_url)
            title = (
                f"{case.name}: {case.views} view(s) x {case.feature_rows:,} feature rows, "
                f"{case.entity_rows:,} entity rows, {case.keys:,} keys ({case.rows_per_key} rows "
                f"per key over {SPAN_DAYS} days, ~{case.in_ttl} inside the {TTL.days}-day TTL)"
            )
            text = table(title, results)
        finished = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_load()}"
        report["cases"][name] = {"finished": finished, "results": results}
        print(f"{text}\n(finished {finished})\n", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pit_bench_{'_'.join(wanted) if args.only else 'all'}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
