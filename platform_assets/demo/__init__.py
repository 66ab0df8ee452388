"""`make demo`: run each tenant's pipeline on the embedded instance, promote, print a summary.

Everything goes through real Dagster runs recorded in DAGSTER_HOME (`dagster job execute` from
each tenant's code location), so `make ui` afterwards shows the same runs, checks and lineage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.table import Table

from platform_assets.composition.locations import location_definitions
from platform_assets.definitions import defs
from platform_assets.demo.approvals import walk
from platform_assets.env import dagster_home
from platform_assets.governance.reconcile import champion_of
from platform_assets.governance.sensors import promotion_sensor
from platform_assets.tenancy.locations import code_locations
from platform_assets.tenancy.runs import pipeline_job_name

SENSOR_CURSOR_KEY = "mlplat/demo/promotion_sensor_cursor"
# Runs in this process log to the console at WARNING: their events are in the instance (the UI
# shows them), and the demo prints one line per run.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _dagster(*args: str, console: Console) -> None:
    cmd = [str(Path(sys.executable).with_name("dagster")), *args]
    console.print(f"[dim]$ {' '.join(cmd[1:])}[/dim]")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-20_000:] + proc.stderr[-20_000:])
        raise SystemExit(f"`dagster {args[0]} {args[1]}` failed with exit code {proc.returncode}")
    console.print(f"[dim]  done in {time.perf_counter() - started:.1f}s[/dim]")


def run_pipelines(console: Console) -> None:
    """Each tenant's pipeline job, from its own code location, as the UI would launch it."""
    for location in code_locations()[1:]:
        for tenant in location.tenants:
            console.rule(
                f"Materializing tenant {tenant}'s assets (job {pipeline_job_name(tenant)})"
            )
            _dagster(
                "job",
                "execute",
                "-m",
                location.module,
                "-a",
                location.attribute,
                "-j",
                pipeline_job_name(tenant),
                "--tags",
                json.dumps({"mlplat/launched_by": os.environ.get("MLPLAT_USER", "system")}),
                console=console,
            )


def run_costs(definitions: dg.Definitions, instance: dg.DagsterInstance, console: Console) -> None:
    """Today's cost ledger of each tenant, then the platform's showback: one run each, in this
    process (four small steps; a subprocess per run would mostly load code locations)."""
    console.rule("Rolling up today's cost per tenant")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    graph = definitions.resolve_asset_graph()
    cost_keys = sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).tags.get("asset_type") == "cost"),
        key=lambda k: (k.path[0] == "platform", k.to_user_string()),
    )
    job = definitions.resolve_implicit_global_asset_job_def()
    for key in cost_keys:
        result = job.execute_in_process(
            instance=instance,
            run_config=QUIET,
            partition_key=today,
            asset_selection=[key],
            tags={"tenant": key.path[0]},
            raise_on_error=False,
        )
        if not result.success:
            raise SystemExit(f"cost rollup {key.to_user_string()} failed (run {result.run_id})")
        console.print(f"  {key.to_user_string()}: run {result.run_id[:8]}")


def run_monitoring(
    definitions: dg.Definitions, instance: dg.DagsterInstance, console: Console
) -> None:
    """Batch scores and drift of every model by its (possibly just approved) champion: the
    pipelines ran before the approvals, so a first demo has nothing scored yet. One run per
    tenant, in this process (as run_costs)."""
    console.rule("Batch scores and drift by each champion")
    graph = definitions.resolve_asset_graph()
    by_tenant: dict[str, list[dg.AssetKey]] = {}
    for key in graph.get_all_asset_keys():
        if graph.get(key).tags.get("asset_type") in ("predictions", "drift"):
            by_tenant.setdefault(key.path[0], []).append(key)
    job = definitions.resolve_implicit_global_asset_job_def()
    for tenant, keys in sorted(by_tenant.items()):
        result = job.execute_in_process(
            run_config=QUIET,
            instance=instance,
            asset_selection=keys,
            tags={"tenant": tenant},
            raise_on_error=False,
        )
        checks = [
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        drifted = [c.description for c in checks if not c.passed]
        outcome = "ok" if result.success else "FAILED (a blocking drift check, or an error)"
        console.print(
            f"  {tenant}: run {result.run_id[:8]} {outcome}; {len(checks)} drift checks, "
            f"{len(drifted)} failed" + (f": {'; '.join(drifted)}" if drifted else "")
        )


def evaluate_promotion(
    definitions: dg.Definitions, instance: dg.DagsterInstance, console: Console
) -> list[str]:
    """Ticks of the promotion sensor, launched the way the daemon would: cursor kept in the
    instance, runs deduplicated by run key, each a real run recorded in the instance. A tick
    leaves models it had no time for to the next one, so tick until one submits nothing."""
    console.rule("Evaluating the promotion sensor")
    repo = definitions.get_repository_def()
    lines: list[str] = []
    for _ in range(20):
        cursor = instance.run_storage.get_cursor_values({SENSOR_CURSOR_KEY}).get(SENSOR_CURSOR_KEY)
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, repository_def=repo, resources=definitions.resources
        ) as context:
            result = promotion_sensor(context)
            new_cursor = context.cursor
        for event in result.asset_events:  # its judgements, recorded as the daemon does
            instance.report_runless_asset_event(event)
        if new_cursor is not None:
            instance.run_storage.set_cursor_values({SENSOR_CURSOR_KEY: new_cursor})
        if result.skip_reason is not None:
            lines.append(f"sensor skipped: {result.skip_reason.skip_message}")
            break
        for request in result.run_requests:
            lines.append(launch(definitions, instance, promotion_sensor, request))
    for line in lines:
        console.print(f"  {line}")
    return lines


def launch(definitions: dg.Definitions, instance: dg.DagsterInstance, sensor, request) -> str:
    existing = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/run_key": request.run_key}), limit=1
    )
    if existing:
        return f"{request.run_key}: already launched, not promoted twice"
    job = request.job_name or sensor.job_name
    tags = {**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": sensor.name}
    # A real run on the instance, launched in this process: a `dagster job execute`
    # subprocess would spend most of its time loading the code location again.
    result = definitions.resolve_job_def(job).execute_in_process(
        run_config={**request.run_config, **QUIET},
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )
    if not result.success:
        raise SystemExit(f"{request.run_key}: run {result.run_id} of {job} failed")
    return f"{request.run_key}: launched {job} (run {result.run_id[:8]})"


def summary(definitions: dg.Definitions, instance: dg.DagsterInstance) -> Table:
    graph = definitions.get_repository_def().asset_graph
    table = Table(title="mlplat demo summary")
    for col in (
        "tenant",
        "model",
        "version",
        "metrics (held out)",
        "champion",
        "checks",
        "cost USD",
    ):
        table.add_column(col)
    tenants = sorted({k.path[0] for k in graph.get_all_asset_keys()})
    for tenant in tenants:
        keys = [k for k in graph.get_all_asset_keys() if k.path[0] == tenant]
        passed = failed = 0
        for check_key in graph.asset_check_keys:
            if check_key.asset_key.path[0] != tenant:
                continue
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [check_key]
            ).get(check_key)
            # A planned check that never ran (the drift checks before a champion exists) has no
            # result to count.
            if record is None or not isinstance(record.evaluation, dg.AssetCheckEvaluation):
                continue
            passed += record.evaluation.passed
            failed += not record.evaluation.passed
        cost = 0.0
        for key in keys:
            event = instance.get_latest_materialization_event(key)
            if (
                event
                and event.asset_materialization
                and "cost/usd" in event.asset_materialization.metadata
            ):
                cost += float(event.asset_materialization.metadata["cost/usd"].value)
        for key in sorted(keys, key=lambda k: k.to_user_string()):
            if key.path[1] != "evaluation_reports":
                continue
            event = instance.get_latest_materialization_event(key)
            if event is None:
                continue
            md = event.asset_materialization.metadata
            metrics = md["metrics"].value
            champion = champion_of(md["registered_model"].value)
            table.add_row(
                tenant,
                md["registered_model"].value.split(".", 1)[1],
                str(md["model_version"].value),
                f"auc={metrics['roc_auc']:.3f} ap={metrics['average_precision']:.3f}",
                f"v{champion}" if champion is not None else "none",
                f"{passed} passed, {failed} failed",
                f"{cost:.6f}",
            )
    return table


def main() -> None:
    console = Console()
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    started = time.perf_counter()
    run_pipelines(console)

    definitions = defs()  # every location's definitions, once, for the cost runs and summary
    with dg.DagsterInstance.get() as instance:
        run_costs(definitions, instance, console)
        evaluate_promotion(location_definitions("platform"), instance, console)
        console.rule("Approval workflow")
        for line in walk(console):
            console.print(f"  {line}")
        run_monitoring(definitions, instance, console)
        console.print(summary(definitions, instance))
    console.print(
        f"demo runs took {time.perf_counter() - started:.0f}s; "
        f"open the UI with `make ui` (instance: {home})"
    )
