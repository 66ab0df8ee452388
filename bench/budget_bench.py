"""Budget check benchmark: the run coordinator's check at 100 tenants with 1M recorded steps.

Run with `.venv/bin/python -m bench.budget_bench` (`--tenants`, `--steps`, `--scan-steps`). The
ledger (platform DB, SQLite as in the embedded deployment) holds `--steps` billed steps; a few new
steps wait in the event log, so each check also refreshes. The peer, measured in the same run, is
the check it replaced: summing the tenant's month from the event log, at `--scan-steps` steps.
Prints medians and the ratio; writes JSON to bench/results/budget_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

RESULTS = Path(__file__).parent / "results" / "budget_bench.json"
TARGET_MS = 50.0


def _fill_ledger(engine, ledger: str, tenants: list[str], steps: int, month: str) -> None:
    """`steps` billed steps spread over the tenants, and their month totals, in bulk."""
    from platform_assets.cost.ledger import schema

    table, totals = schema().steps, schema().totals

    rng = random.Random(7)
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC).timestamp()
    sums: dict[str, list[float]] = {t: [0.0, 0] for t in tenants}
    with engine.begin() as conn:
        batch = []
        for i in range(steps):
            tenant = tenants[i % len(tenants)]
            usd = rng.uniform(0.0001, 0.01)
            sums[tenant][0] += usd
            sums[tenant][1] += 1
            batch.append(
                {
                    "ledger": ledger,
                    "storage_id": i + 1,
                    "tenant": tenant,
                    "month": month,
                    "timestamp": start + i,
                    "asset_key": f"{tenant}/features/f{i % 3}",
                    "run_id": f"run{i // 20}",
                    "step_key": f"{tenant}__features__f{i % 3}",
                    "usd": usd,
                    "failed": i % 50 == 0,
                }
            )
            if len(batch) == 50_000:
                conn.execute(table.insert(), batch)
                batch = []
        if batch:
            conn.execute(table.insert(), batch)
        conn.execute(
            totals.insert(),
            [
                {"ledger": ledger, "tenant": t, "month": month, "usd": u, "steps": n}
                for t, (u, n) in sums.items()
            ],
        )


def _record_steps(instance: dg.DagsterInstance, tenants: list[str], count: int) -> None:
    from bench.scale_bench import record_in_event_log
    from platform_assets.cost.rollup import StepCost

    now = time.time()
    record_in_event_log(
        instance,
        [
            StepCost(
                tenant=t,
                asset_key=f"{t}/features/f0",
                partition="",
                run_id="bench",
                timestamp=now - count + i,
                usd=0.001,
                cpu_seconds=1.0,
                wall_seconds=1.0,
                peak_memory_gib=0.5,
            )
            for i, t in enumerate(tenants[i % len(tenants)] for i in range(count))
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--scan-steps", type=int, default=5_000)
    parser.add_argument("--new-steps", type=int, default=20, help="new events before each round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlplat-budget-") as tmp:
        os.environ.update(MLPLAT_ENV="local", MLPLAT_DATA=str(Path(tmp) / "data"))
        from platform_assets.cost.budget import budget_status
        from platform_assets.cost.ledger import ledger_engine, ledger_id, refresh
        from platform_assets.cost.rollup import month_bounds, tenant_steps
        from platform_assets.tenancy.limits import limits_for

        limits = limits_for("payments")  # every tenant gets the same budget here
        tenants = [f"t{i:03d}" for i in range(args.tenants)]
        month = datetime.now(UTC).strftime("%Y-%m")
        (Path(tmp) / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "home")) as instance:
            engine = ledger_engine()
            refresh(instance, engine)  # creates the tables and the ledger's id
            started = time.perf_counter()
            _fill_ledger(engine, ledger_id(instance), tenants, args.steps, month)
            fill_s = time.perf_counter() - started
            checks = []
            for _ in range(3):
                _record_steps(instance, tenants, args.new_steps)
                for tenant in tenants:
                    started = time.perf_counter()
                    budget_status(instance, tenant, limits)
                    checks.append(time.perf_counter() - started)
            ledger_ms = statistics.median(checks) * 1000
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("select count(*) from cost_ledger_steps").scalar()

            # The peer: the event-log scan the check replaced, over --scan-steps steps.
            _record_steps(instance, tenants, args.scan_steps)
            start, _ = month_bounds(month)
            scans = []
            for tenant in tenants[:10]:
                started = time.perf_counter()
                sum(s.usd for s in tenant_steps(instance, start, datetime.now(UTC), tenant))
                scans.append(time.perf_counter() - started)
            scan_ms = statistics.median(scans) * 1000

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine_cpus": os.cpu_count(),
        "tenants": args.tenants,
        "ledger_steps": rows,
        "ledger_fill_s": round(fill_s, 1),
        "new_steps_per_round": args.new_steps,
        "check_ms_median": round(ledger_ms, 2),
        "target_ms": TARGET_MS,
        "scan_steps": args.scan_steps,
        "scan_check_ms_median": round(scan_ms, 1),
        "scan_over_ledger": round(scan_ms / ledger_ms, 1),
    }
    print(f"budget check, {args.tenants} tenants, {rows:,} steps in the ledger:")
    print(
        f"  ledger (refresh + lookup): {ledger_ms:.2f} ms median per check "
        f"(target < {TARGET_MS:.0f} ms, ratio to target {ledger_ms / TARGET_MS:.2f})"
    )
    print(
        f"  event-log scan (the old check) over only {args.scan_steps:,} steps: "
        f"{scan_ms:.1f} ms per check = {scan_ms / ledger_ms:.1f}x the ledger's"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
