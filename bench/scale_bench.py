"""Scale benchmark: 100 tenants' code locations against plain Dagster, and cost rollups.

Run with `.venv/bin/python -m bench.scale_bench` (`--tenants`, `--steps`, `--repeats`). It
generates tenants' YAML into a temporary defs root (MLPLAT_DEFS_ROOT), times building and
resolving every location merged, one tenant's location and the platform location, each against
a plain `dg.Definitions` of the same assets in the same process (the tenant's also against plain
Dagster with the same checks, job, schedule and sensor, and against hand-written assets);
times the tenant's and the platform's location as Dagster loads them, each its own code server
until a client holds its repository, against plain Dagster's code server of the same
definitions (the targets: 1.5x and 2x); starts every location as its own `dagster api grpc`
server and sums their memory; then records
`--steps` metered steps in a temporary instance and times the event-log rollup and the ledger
group-by. Prints medians and ratios; writes JSON to bench/results/scale_bench.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml

from platform_assets.resources.lake import LakeResource

RESULTS = Path(__file__).parent / "results" / "scale_bench.json"
PACKAGE = "mlplat_scale_defs"
SOURCES = ("s0", "s1")
FEATURES = ("f0", "f1", "f2")
MONTH = "2026-10"


def _component(type_name: str, attributes: dict) -> str:
    return yaml.safe_dump({"type": type_name, "attributes": attributes}, sort_keys=False)


def generate_tenants(root: Path, count: int) -> int:
    """Write `count` tenants (tenant, 3 sources, 3 feature sets, 1 model).

    Returns the least number of assets they make; components may add more (e.g. predictions).
    """
    columns = {"entity_id": "string", "event_timestamp": "timestamp", "value": "float64"}
    for i in range(count):
        name = f"t{i:03d}"
        files = {
            "tenant": _component(
                "platform_assets.tenancy.component.Tenant",
                {
                    "name": name,
                    "description": f"Generated tenant {name}.",
                    "owners": [f"team:{name}"],
                    "namespace": f"tenant-{name}",
                },
            ),
        }
        for s in SOURCES:
            files[f"sources/{s}"] = _component(
                "platform_assets.sources.component.Source",
                {
                    "name": s,
                    "description": f"Source {s}.",
                    "path": f"{s}.parquet",
                    "timestamp_column": "event_timestamp",
                    "columns": columns,
                },
            )
        files["sources/labels"] = _component(
            "platform_assets.sources.component.Source",
            {
                "name": "labels",
                "description": "Labels.",
                "path": "labels.parquet",
                "timestamp_column": "label_ts",
                "columns": {"entity_id": "string", "label_ts": "timestamp", "label": "int64"},
            },
        )
        for j, f in enumerate(FEATURES):
            source = SOURCES[j % len(SOURCES)]
            files[f"features/{f}"] = _component(
                "platform_assets.features.component.FeatureSet",
                {
                    "name": f,
                    "description": f"Feature set {f}.",
                    "entity": {"name": "entity", "join_key": "entity_id"},
                    "sources": [source],
                    "sql": (
                        "select entity_id, event_timestamp, event_timestamp as created_timestamp,"
                        f" value as {f}_value from {source}"
                    ),
                    "features": {f"{f}_value": "float64"},
                },
            )
        files["models/m"] = _component(
            "platform_assets.models.component.Model",
            {
                "name": "m",
                "description": "Generated model.",
                "features": [f"{f}:*" for f in FEATURES],
                "labels": {
                    "source": "labels",
                    "entity_columns": ["entity_id"],
                    "timestamp_column": "label_ts",
                    "label_column": "label",
                },
                "algorithm": "logistic_regression",
            },
        )
        for rel, text in files.items():
            path = root / name / rel / "defs.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    per_tenant = len(SOURCES) + 1 + len(FEATURES) + 3 + 1  # sources, features, model x3, cost
    return count * per_tenant + 1  # + the platform's showback asset


# Wall time is what a code server's start takes; on a machine whose cores are shared (load far
# above the core count) it mostly measures the scheduler, and CPU time is the work each side did.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def now() -> float:
    return _clock()


def _fresh_imports() -> None:
    """Forget what a previous load cached, so every repeat parses and builds from scratch, as
    a new code server does: the tenant folders, limits.yaml and the platform's settings."""
    from platform_assets.k8s.config import _platform
    from platform_assets.tenancy.catalog import load_tenant
    from platform_assets.tenancy.limits import read_limits
    from platform_assets.tenancy.locations import location_of

    for cached in (load_tenant, read_limits, _platform, location_of):
        cached.cache_clear()
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[module]


Shape = list[tuple[dg.AssetKey, list[dg.AssetKey], str]]


def load_mlplat() -> tuple[float, dg.RepositoryDefinition]:
    """Seconds to build and resolve every location merged (what `dg check defs` loads)."""
    from platform_assets.composition.locations import all_locations

    _fresh_imports()
    gc.collect()  # not the previous load's garbage: each side pays only for its own
    start = now()
    repo = all_locations().get_repository_def()
    return now() - start, repo


def load_location(name: str) -> tuple[float, dg.RepositoryDefinition]:
    """Seconds to build and resolve one code location, as its own process does at start."""
    from platform_assets.composition.locations import platform_location, tenant_location
    from platform_assets.tenancy.locations import location_named

    _fresh_imports()
    gc.collect()
    start = now()
    defs = platform_location() if name == "platform" else tenant_location(location_named(name))
    repo = defs.get_repository_def()
    return now() - start, repo


def load_plain_location(repo: dg.RepositoryDefinition) -> float:
    """A plain `dg.Definitions` of the location's assets: its materializable ones as
    `@dg.asset`s with the same keys, deps and groups, the rest as `dg.AssetSpec`s."""
    graph = repo.asset_graph
    keys = graph.get_all_asset_keys()
    materializable = [k for k in keys if graph.get(k).is_materializable]
    external = [k for k in keys if not graph.get(k).is_materializable]
    gc.collect()
    start = now()
    dg.Definitions(
        assets=[
            *[
                make(k, sorted(graph.get(k).parent_keys), graph.get(k).group_name or "default")
                for k in materializable
            ],
            *[dg.AssetSpec(k, group_name=graph.get(k).group_name) for k in external],
        ]
    ).get_repository_def()
    return now() - start


def plain_definitions(repo: dg.RepositoryDefinition) -> dict:
    """What a location defines, as plain Dagster needs it (JSON, keys as path lists): each
    materializable asset's key, deps, group and the checks of its own step; the asset checks
    that are steps of their own; the asset jobs and automation sensors (by the keys they
    select) and the schedules."""
    graph = repo.asset_graph
    assets, checks, external = [], [], []
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        if not node.is_materializable:
            external.append((key.path, node.group_name))
            continue
        own = node.assets_def.check_keys
        specs = [(c.name, graph.get_check_spec(c).blocking) for c in sorted(own)]
        parents = [p.path for p in sorted(node.parent_keys)]
        assets.append((key.path, parents, node.group_name or "default", specs))
        checks += [(c.asset_key.path, c.name) for c in sorted(node.check_keys) if c not in own]
    return {
        "assets": assets,
        "checks": checks,
        "external": external,
        "jobs": [
            (j.name, [k.path for k in sorted(j.asset_layer.selected_asset_keys)])
            for j in repo.get_all_jobs()
            if not j.name.startswith("__")
        ],
        "schedules": [(s.name, s.cron_schedule, s.job_name) for s in repo.schedule_defs],
        "sensors": [
            (s.name, [k.path for k in sorted(s.asset_selection.resolve(graph))])
            for s in repo.sensor_defs
            if isinstance(s, dg.AutomationConditionSensorDefinition)
        ],
    }


def definitions_shape(repo: dg.RepositoryDefinition) -> tuple:
    """What two locations must share to be compared: asset and check keys, job, schedule and
    sensor names."""
    graph = repo.asset_graph
    return (
        sorted(graph.get_all_asset_keys()),
        sorted(graph.asset_check_keys),
        sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        sorted(s.name for s in repo.schedule_defs),
        sorted(s.name for s in repo.sensor_defs),
    )


def load_plain_definitions(parts: dict) -> tuple[float, dg.RepositoryDefinition]:
    """The same definitions in plain Dagster (bench/plain_peer.py), built and resolved."""
    from bench.plain_peer import definitions

    gc.collect()
    start = now()
    repo = definitions(parts).get_repository_def()
    return now() - start, repo


def load_handwritten_location(repo: dg.RepositoryDefinition) -> float:
    """The location's assets hand-written as `@dg.asset`s with everything they carry (checks,
    tags, kinds, metadata, op tags, automation, partitions) and its resources."""
    graph = repo.asset_graph
    external = [
        dg.AssetSpec(k, group_name=graph.get(k).group_name)
        for k in graph.get_all_asset_keys()
        if not graph.get(k).is_materializable
    ]
    args = [a for a in handwritten_args(repo) if graph.get(a["key"]).is_materializable]
    resources = dict(repo.get_top_level_resources())

    def make_full(kwargs: dict) -> dg.AssetsDefinition:
        @dg.asset(**kwargs)
        def _asset(context):
            return None

        return _asset

    gc.collect()
    start = now()
    assets = [*[make_full(a) for a in args], *external]
    dg.Definitions(assets=assets, resources=resources).get_repository_def()
    return now() - start


def _serve(cmd: list[str], env: dict[str, str], name: str) -> tuple[float, float]:
    """Start one code server; return (wall, its CPU) seconds until a client holds the
    location's repository, as the webserver loads it (list, then the repository snapshot)."""
    import socket
    import subprocess

    import psutil
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:  # the server says so once it listens
            if "Started Dagster code server" in line:
                break
        else:
            raise SystemExit(f"code server {name} did not start (exit {proc.wait()})")
        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name=name)
        with dg.DagsterInstance.ephemeral() as instance, origin.create_location(instance):
            wall = time.perf_counter() - started
            times = psutil.Process(proc.pid).cpu_times()
        return wall, times.user + times.system
    finally:
        proc.terminate()
        proc.wait()


def code_server_loads(name: str, parts: dict, env: dict[str, str], repeats: int) -> dict:
    """A tenant location's load as Dagster does it, against the plain peer's: each started as
    its own `dagster api grpc` server (imports, definitions, the repository snapshot it
    serves), interleaved, medians of wall and server CPU time."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(parts, f)
    peer_env = {**env, "MLPLAT_PLAIN_PEER_PARTS": f.name}
    ours_cmd = [dagster, "api", "grpc", "--module-name", "platform_assets.locations"]
    peer_cmd = [
        dagster,
        "api",
        "grpc",
        "--python-file",
        str(Path(__file__).with_name("plain_peer.py")),
    ]
    ours, peer = [], []
    try:
        for _ in range(repeats):
            ours.append(_serve([*ours_cmd, "--attribute", name], env, name))
            peer.append(_serve([*peer_cmd, "--attribute", "defs"], peer_env, "plain_peer"))
    finally:
        os.unlink(f.name)
    result = {"repeats": repeats}
    for i, clock in enumerate(("wall", "cpu")):
        o, p = median([t[i] for t in ours]), median([t[i] for t in peer])
        result |= {f"ours_{clock}_s": round(o, 3), f"plain_{clock}_s": round(p, 3)}
        result[f"ratio_{clock}"] = round(o / p, 2)
    return result


def workspace_memory(names: list[str], env: dict[str, str], parallel: int = 2) -> dict:
    """Start each location as its own `dagster api grpc` code server (what `dagster dev` and
    the Helm chart run), read its memory once it serves, stop it. Returns sums over all."""
    import socket
    import subprocess

    import psutil

    dagster = str(Path(sys.executable).with_name("dagster"))

    def start(name: str) -> subprocess.Popen:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [dagster, "api", "grpc", "--module-name", "platform_assets.locations"]
        cmd += ["--attribute", name, "--host", "127.0.0.1", "--port", str(port)]
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    rss, uss, pending = {}, {}, list(names)
    while pending:
        batch = [(n, start(n)) for n in pending[:parallel]]
        pending = pending[parallel:]
        for name, proc in batch:
            for line in proc.stdout:  # the server says so once the location has loaded
                if "Started Dagster code server" in line:
                    break
            else:
                raise SystemExit(f"code location {name} did not start (exit {proc.wait()})")
            info = psutil.Process(proc.pid).memory_full_info()
            rss[name], uss[name] = info.rss, info.uss
        for _, proc in batch:
            proc.terminate()
            proc.wait()
    return {
        "locations": len(names),
        "rss_sum_gib": round(sum(rss.values()) / 2**30, 2),
        "uss_sum_gib": round(sum(uss.values()) / 2**30, 2),
        "rss_tenant_median_mib": round(
            statistics.median(v for n, v in rss.items() if n != "platform") / 2**20
        ),
        "rss_platform_mib": round(rss["platform"] / 2**20),
    }


def graph_shape(repo: dg.RepositoryDefinition) -> Shape:
    graph = repo.asset_graph
    return [
        (k, sorted(graph.get(k).parent_keys), graph.get(k).group_name or "default")
        for k in graph.get_all_asset_keys()
    ]


def make(key: dg.AssetKey, deps: list[dg.AssetKey], group: str) -> dg.AssetsDefinition:
    @dg.asset(key=key, deps=deps, group_name=group)
    def _asset() -> None:
        return None

    return _asset


def load_plain(shape: Shape) -> tuple[float, int]:
    """The same keys, dependencies and groups as plain `@dg.asset`s in one `dg.Definitions`."""
    gc.collect()
    start = now()
    repo = dg.Definitions(assets=[make(*node) for node in shape]).get_repository_def()
    return now() - start, len(repo.asset_graph.get_all_asset_keys())


def handwritten_args(repo: dg.RepositoryDefinition) -> list[dict]:
    """`@dg.asset` arguments that rebuild each of our assets by hand: key, deps, group, owners,
    tags, kinds, description, metadata, checks, op tags, pool, automation, partitions and the
    resources it requires. What a team writing the same assets in Python would load."""
    graph = repo.asset_graph
    out = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        assets_def = node.assets_def
        spec = assets_def.specs_by_key[key]
        out.append(
            {
                "key": key,
                "deps": sorted(node.parent_keys),
                "group_name": node.group_name,
                "owners": list(spec.owners),
                "tags": {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")},
                "kinds": set(node.kinds),
                "description": spec.description,
                "metadata": dict(spec.metadata),
                "check_specs": [graph.get_check_spec(c) for c in node.check_keys],
                "op_tags": dict(assets_def.op.tags),
                "pool": assets_def.op.pool,
                "automation_condition": spec.automation_condition,
                "partitions_def": spec.partitions_def,
                "required_resource_keys": set(assets_def.required_resource_keys) - {"io_manager"},
            }
        )
    return out


def load_handwritten(args: list[dict], resources: dict) -> float:
    """The same assets written directly as `@dg.asset`s (no YAML, no catalog, no platform jobs)."""

    def make_full(kwargs: dict) -> dg.AssetsDefinition:
        @dg.asset(**kwargs)
        def _asset(context):
            return None

        return _asset

    gc.collect()
    start = now()
    dg.Definitions(assets=[make_full(a) for a in args], resources=resources).get_repository_def()
    return now() - start


def synthetic_steps(tenants: int, steps: int, month_start: datetime) -> list:
    """`steps` ledger rows spread over tenants, assets and the first 27 days of the month."""
    from platform_assets.cost.rollup import StepCost

    rng = random.Random(7)
    kinds = [*[("sources", s) for s in SOURCES], *[("features", f) for f in FEATURES]]
    assets = [(f"t{i:03d}", k, n) for i in range(tenants) for k, n in [*kinds, ("models", "m")]]
    out = []
    for n in range(steps):
        tenant, kind, name = assets[n % len(assets)]
        when = month_start + timedelta(seconds=rng.uniform(0, 27 * 86400))
        out.append(
            StepCost(
                tenant=tenant,
                asset_key=f"{tenant}/{kind}/{name}",
                partition="",
                run_id=f"run-{n // 10}",
                timestamp=when.timestamp(),
                usd=round(rng.uniform(0.0001, 0.05), 8),
                cpu_seconds=1.0,
                wall_seconds=2.0,
                peak_memory_gib=0.5,
            )
        )
    return out


def record_in_event_log(instance: dg.DagsterInstance, steps: list) -> None:
    """Store the steps as materializations with cost metadata, as metered steps leave them."""
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    batch = []
    for s in steps:
        mat = dg.AssetMaterialization(
            asset_key=dg.AssetKey.from_user_string(s.asset_key),
            metadata={
                "cost/tenant": s.tenant,
                "cost/usd": s.usd,
                "cost/cpu_seconds": s.cpu_seconds,
                "cost/wall_seconds": s.wall_seconds,
                "cost/peak_memory_gib": s.peak_memory_gib,
            },
        )
        batch.append(
            EventLogEntry(
                user_message="",
                level="INFO",
                job_name="bench",
                run_id="bench",  # one run: SQLite storage keeps one database file per run
                error_info=None,
                timestamp=s.timestamp,
                step_key=s.asset_key.replace("/", "__"),  # a step's event, or it is not billed
                dagster_event=DagsterEvent(
                    event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                    event_specific_data=StepMaterializationData(mat),
                    job_name="bench",
                ),
            )
        )
    instance.event_log_storage.store_event_batch(batch)


def write_ledger(lake: LakeResource, steps: list) -> None:
    """One lake snapshot per tenant and day, as the `<tenant>/cost` partitions write them."""
    import pyarrow as pa

    from platform_assets.cost.rollup import LEDGER_COLUMNS, LEDGER_KIND, ledger_frame

    frame = ledger_frame(steps)
    for (tenant, day), rows in frame.groupby(["tenant", "day"]):
        table = pa.Table.from_pandas(rows[LEDGER_COLUMNS], preserve_index=False)
        lake.write(tenant, LEDGER_KIND, day, table)


def median(values: list[float]) -> float:
    return statistics.median(values)


def _print_rest(ours: list, hand: list, platform: list, platform_plain: list) -> None:
    print(
        f"    the same assets hand-written {median(hand) * 1000:.1f} ms   ratio "
        f"{median(ours) / median(hand):.2f}x"
    )
    print(
        f"  platform: {median(platform) * 1000:.1f} ms   plain Dagster "
        f"{median(platform_plain) * 1000:.1f} ms   ratio "
        f"{median(platform) / median(platform_plain):.2f}x"
    )


def _print_servers(servers: dict) -> None:
    print("code locations loaded as Dagster loads them (each its own code server, start to")
    print("  repository snapshot served), against the same definitions in plain Dagster:")
    for name, v in servers.items():
        target = "2x" if name == "platform" else "1.5x"
        print(
            f"  {name}: {v['ours_wall_s']:.2f} s wall / {v['ours_cpu_s']:.2f} s CPU   plain "
            f"{v['plain_wall_s']:.2f} s / {v['plain_cpu_s']:.2f} s   ratio "
            f"{v['ratio_wall']:.2f}x wall, {v['ratio_cpu']:.2f}x CPU (target <= {target}; "
            f"median of {v['repeats']})"
        )


def _print_locations(
    one: str, repeats: int, clock: str, ours: list, same: list, bare: list
) -> None:
    print(f"code locations, definitions built in this process ({clock} time, median of {repeats}):")
    print(
        f"  tenant {one}: {median(ours) * 1000:.1f} ms   plain Dagster, the same assets, checks, "
        f"job, schedule and sensor {median(same) * 1000:.1f} ms   ratio "
        f"{median(ours) / median(same):.2f}x"
    )
    print(
        f"    bare assets only (same keys, deps, groups) {median(bare) * 1000:.1f} ms   ratio "
        f"{median(ours) / median(bare):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-load", action="store_true", help="only the rollup figures")
    parser.add_argument(
        "--skip-memory", action="store_true", help="no workspace memory (one process per location)"
    )
    parser.add_argument(
        "--event-log-steps", type=int, default=10_000, help="steps read back from the event log"
    )
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="load timings")
    parser.add_argument(
        "--locations-only",
        action="store_true",
        help="only one tenant's and the platform's location (prints, writes nothing)",
    )
    args = parser.parse_args()
    global _clock
    _clock = CLOCKS[args.clock]

    from platform_assets.cost.rollup import (
        ledger_between,
        month_bounds,
        rollup_frame,
        tenant_steps,
    )

    with tempfile.TemporaryDirectory(prefix="mlplat-scale-") as tmp:
        root = Path(tmp) / PACKAGE
        expected = generate_tenants(root, args.tenants)
        os.environ.update(
            MLPLAT_DEFS_ROOT=str(root), MLPLAT_ENV="local", MLPLAT_DATA=str(Path(tmp) / "data")
        )
        mlplat, plain, handwritten, n_assets = [], [], [], 0
        merged = 0 if args.skip_load or args.locations_only else args.repeats
        for _ in range(merged):  # interleaved: drift hits all
            seconds, repo = load_mlplat()
            shape = graph_shape(repo)
            n_assets = len(shape)
            mlplat.append(seconds)
            seconds, n_plain = load_plain(shape)
            plain.append(seconds)
            resources = dict(repo.get_top_level_resources())
            handwritten.append(load_handwritten(handwritten_args(repo), resources))
        if merged and not (expected <= n_assets == n_plain):
            raise SystemExit(f"built {n_assets} (mlplat) / {n_plain} (plain), expected {expected}+")
        one = f"t{args.tenants // 2:03d}"  # a tenant location in the middle of the workspace
        tenant_s, tenant_plain, tenant_same, tenant_hand = [], [], [], []
        platform_s, platform_plain = [], []
        for _ in range(0 if args.skip_load else args.repeats * 5):  # small: more repeats
            seconds, repo = tenant_repo = load_location(one)
            tenant_s.append(seconds)
            tenant_plain.append(load_plain_location(repo))
            seconds, same = load_plain_definitions(plain_definitions(repo))
            if definitions_shape(same) != definitions_shape(repo):
                raise SystemExit(f"the plain peer of {one} does not define what it defines")
            tenant_same.append(seconds)
            tenant_hand.append(load_handwritten_location(repo))
            seconds, repo = platform_repo = load_location("platform")
            platform_s.append(seconds)
            platform_plain.append(load_plain_location(repo))
        memory, servers = {}, {}
        if not args.skip_load:
            # The tenant's peer: the same definitions; the platform's: plain Definitions of its
            # assets (its governance jobs are op jobs, which no asset selection can stand for).
            parts = plain_definitions(platform_repo[1])
            peers = {
                one: plain_definitions(tenant_repo[1]),
                "platform": {**parts, "jobs": [], "schedules": [], "sensors": []},
            }
            servers = {
                name: code_server_loads(name, peer, dict(os.environ), args.repeats * 2)
                for name, peer in peers.items()
            }
        if args.locations_only:
            _print_locations(one, args.repeats * 5, args.clock, tenant_s, tenant_same, tenant_plain)
            _print_rest(tenant_s, tenant_hand, platform_s, platform_plain)
            _print_servers(servers)
            return
        if not args.skip_load and not args.skip_memory:
            from platform_assets.tenancy.locations import code_locations

            names = [loc.name for loc in code_locations()]
            memory = workspace_memory(names, dict(os.environ))

        result = json.loads(RESULTS.read_text()) if args.skip_load and RESULTS.exists() else {}
        # Printed now: the rollup below takes minutes on a busy machine.
        if not args.skip_load:
            result |= {
                "load_date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "load_clock": args.clock,
                "tenants": args.tenants,
                "assets": n_assets,
                "load_repeats": args.repeats,
                "load_mlplat_s": round(median(mlplat), 3),
                "load_plain_s": round(median(plain), 3),
                "load_ratio": round(median(mlplat) / median(plain), 2),
                "load_handwritten_s": round(median(handwritten), 3),
                "load_ratio_handwritten": round(median(mlplat) / median(handwritten), 2),
            }
            print(
                f"definitions, {args.tenants} tenants / {n_assets} assets "
                f"(median of {args.repeats}):",
                flush=True,
            )
            print(
                f"  mlplat {result['load_mlplat_s']:.2f} s   plain Dagster "
                f"{result['load_plain_s']:.2f} s   ratio {result['load_ratio']:.2f}x (target <= 2x)"
            )
            print(
                f"  the same assets hand-written (checks, tags, kinds, metadata, resources) "
                f"{result['load_handwritten_s']:.2f} s   mlplat / hand-written "
                f"{result['load_ratio_handwritten']:.2f}x"
            )
            result |= {
                "tenant_location": one,
                "tenant_location_s": round(median(tenant_s), 4),
                "tenant_plain_s": round(median(tenant_plain), 4),
                "tenant_location_ratio": round(median(tenant_s) / median(tenant_plain), 2),
                "tenant_plain_same_defs_s": round(median(tenant_same), 4),
                "tenant_location_ratio_same_defs": round(median(tenant_s) / median(tenant_same), 2),
                "tenant_handwritten_s": round(median(tenant_hand), 4),
                "tenant_location_ratio_handwritten": round(
                    median(tenant_s) / median(tenant_hand), 2
                ),
                "platform_location_s": round(median(platform_s), 4),
                "platform_plain_s": round(median(platform_plain), 4),
                "platform_location_ratio": round(median(platform_s) / median(platform_plain), 2),
                "code_servers": servers,
                "workspace_memory": memory,
            }
            _print_locations(one, args.repeats * 5, args.clock, tenant_s, tenant_same, tenant_plain)
            _print_rest(tenant_s, tenant_hand, platform_s, platform_plain)
            _print_servers(servers)
            if memory:
                print(
                    f"  workspace memory, {memory['locations']} code servers: RSS sum "
                    f"{memory['rss_sum_gib']:.2f} GiB (unique {memory['uss_sum_gib']:.2f} GiB; "
                    f"a tenant's {memory['rss_tenant_median_mib']} MiB, the platform's "
                    f"{memory['rss_platform_mib']} MiB)"
                )

        # A past month: every day is over, so each tenant-day's ledger file is closed.
        month_start, month_end = month_bounds(MONTH)
        steps = synthetic_steps(args.tenants, args.steps, month_start)
        recorded = sum(s.usd for s in steps)
        lake = LakeResource(root=str(Path(tmp) / "lake"))
        write_ledger(lake, steps)
        tenants = sorted({s.tenant for s in steps})
        sample = steps[: args.event_log_steps]
        (Path(tmp) / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "home")) as instance:
            ledger_s = []
            for _ in range(args.repeats):  # what the showback reads: closed days' ledger files
                started = time.perf_counter()
                table = rollup_frame(
                    ledger_between(instance, lake, tenants, month_start, month_end)
                )
                ledger_s.append(time.perf_counter() - started)
            if table["steps"].sum() != args.steps or abs(table["usd"].sum() - recorded) > 1e-6:
                raise SystemExit(f"ledger rollup saw {table['steps'].sum()} steps, {args.steps}")
            started = time.perf_counter()
            record_in_event_log(instance, sample)
            record_s = time.perf_counter() - started
            event_log = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                read = tenant_steps(instance, month_start, month_end)
                event_log.append(time.perf_counter() - started)
            if len(read) != len(sample):
                raise SystemExit(f"event log rollup saw {len(read)} steps, {len(sample)} made")

    per_second = len(sample) / median(event_log)
    result |= {
        "rollup_date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rollup_repeats": args.repeats,
        "steps": args.steps,
        "ledger_rollup_s": round(median(ledger_s), 3),
        "event_log_steps": len(sample),
        "event_log_record_s": round(record_s, 1),
        "event_log_read_s": round(median(event_log), 3),
        "event_log_steps_per_s": round(per_second),
        "event_log_read_100k_s_extrapolated": round(100_000 / per_second, 1),
    }
    print(f"cost rollup, {args.steps:,} recorded steps (median of {args.repeats}):")
    print(
        f"  from the ledger (tenant x day parquet files): {result['ledger_rollup_s']:.2f} s "
        f"(target < 5 s, ratio to target {result['ledger_rollup_s'] / 5:.2f})"
    )
    print(
        f"  from the event log: {len(sample):,} steps in {result['event_log_read_s']:.2f} s "
        f"= {per_second:,.0f} steps/s, i.e. ~{result['event_log_read_100k_s_extrapolated']:.0f} s "
        f"per 100k (target < 5 s; recording them took {record_s:.0f} s)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
