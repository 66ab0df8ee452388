"""`make services-demo`: the demo against the running services deployment.

Every tenant's `<tenant>_pipeline` is launched through the webserver's GraphQL `launchRun` (what a
click in the UI sends), so it waits in the run queue and the daemon starts it; the daemon's
promotion sensor then submits the versions that qualify, and the approval walk and summary are
`make demo`'s. The terminal gets one line per finished step; every event goes to the log file.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from rich.console import Console

from platform_assets.definitions import defs
from platform_assets.demo import summary
from platform_assets.demo.approvals import walk
from platform_assets.services.stack import Stack, _graphql
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.runs import automation_sensor_name, pipeline_job_name

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
STEP_EVENTS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
PROMOTION_SENSOR = "promotion_sensor"

JOBS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
  ... on RepositoryLocation { repositories { name jobs { name } } }
  ... on PythonError { message } } } } } }
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidSubsetError { message }
  ... on PipelineNotFoundError { message }
  ... on UnauthorizedError { message } } }
"""

TICKS = """
query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { status ticks(limit: 10) { timestamp status runIds skipReason
  error { message } } } } } }
"""


def job_locations(url: str) -> dict[str, list[tuple[str, str]]]:
    """job name -> the (code location, repository) pairs defining it, from the webserver's
    workspace (each tenant's location has its own `__ASSET_JOB`)."""
    out: dict[str, list[tuple[str, str]]] = {}
    entries = _graphql(url, JOBS_QUERY)["workspaceOrError"]["locationEntries"]
    for entry in entries:
        location = entry["locationOrLoadError"] or {}
        if "message" in location:
            raise RuntimeError(f"code location {entry['name']} failed to load: {location}")
        for repo in location.get("repositories", []):
            for job in repo["jobs"]:
                out.setdefault(job["name"], []).append((entry["name"], repo["name"]))
    return out


def location_of(locations: dict[str, list[tuple[str, str]]], job: str) -> tuple[str, str]:
    """The one location defining `job`."""
    found = locations.get(job, [])
    if len(found) != 1:
        where = ", ".join(loc for loc, _ in found) or "none"
        raise KeyError(f"job {job!r} must be in exactly one code location (found: {where})")
    return found[0]


def launch_run(
    url: str,
    where: tuple[str, str],
    job: str,
    tags: dict[str, str],
    asset_selection: list[list[str]] | None = None,
) -> str:
    """Launch `job` of location `where` through the webserver as the UI does; returns the run
    id."""
    location, repo = where
    selector: dict = {"repositoryLocationName": location, "repositoryName": repo, "jobName": job}
    if asset_selection:
        selector["assetSelection"] = [{"path": p} for p in asset_selection]
    params = {
        "selector": selector,
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    result = _graphql(url, LAUNCH, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launching {job} in {location} failed: {result}")
    return result["run"]["runId"]


class Progress:
    """Follows runs in the instance: one terminal line per finished step, every event logged."""

    def __init__(self, instance: dg.DagsterInstance, log: Path, say: Callable[[str], None]):
        self.instance, self.say = instance, say
        self.log = log.open("a")
        self.cursors: dict[str, str | None] = {}
        self.labels: dict[str, str] = {}

    def follow(self, run_id: str, label: str) -> None:
        self.cursors.setdefault(run_id, None)
        self.labels[run_id] = label

    def poll(self) -> None:
        for run_id, cursor in list(self.cursors.items()):
            conn = self.instance.get_records_for_run(run_id, cursor=cursor, limit=1000)
            for record in conn.records:
                entry = record.event_log_entry
                stamp = datetime.fromtimestamp(entry.timestamp, UTC).strftime("%H:%M:%S")
                self.log.write(f"{stamp} {run_id[:8]} {entry.level} {entry.message}\n")
                event = entry.dagster_event
                if event is not None and event.event_type in STEP_EVENTS:
                    outcome = (
                        "ok" if event.event_type == dg.DagsterEventType.STEP_SUCCESS else "FAILED"
                    )
                    self.say(f"{self.labels[run_id]:>10}  {event.step_key:<48} {outcome}")
            self.cursors[run_id] = conn.cursor
        self.log.flush()

    def wait(self, run_ids: list[str], timeout: float) -> dict[str, dg.DagsterRun]:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            runs = {r: self.instance.get_run_by_id(r) for r in run_ids}
            if all(run.status in FINISHED for run in runs.values()):
                self.poll()
                return runs
            if time.monotonic() > deadline:
                pending = [f"{r[:8]} {run.status.value}" for r, run in runs.items()]
                raise TimeoutError(f"runs still going after {timeout:.0f}s: {pending}")
            time.sleep(1)


def promotion_runs(
    url: str, location: tuple[str, str], since: float, after: float, timeout: float, say
) -> list[str]:
    """Waits for a promotion sensor tick of the daemon's that started after `after` (every
    pipeline had finished by then); returns the runs its ticks since `since` requested."""
    selector = {
        "repositoryLocationName": location[0],
        "repositoryName": location[1],
        "sensorName": PROMOTION_SENSOR,
    }
    deadline, errors = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        state = _graphql(url, TICKS, {"selector": selector})["sensorOrError"]["sensorState"]
        ticks = sorted(
            (t for t in state["ticks"] if t["timestamp"] >= since), key=lambda t: t["timestamp"]
        )
        for tick in ticks:
            if tick["status"] == "FAILURE" and tick["error"]["message"] not in errors:
                errors.append(tick["error"]["message"])
                say(f"  daemon: {PROMOTION_SENSOR} tick failed, the daemon retries it")
        done = [t for t in ticks if t["status"] in ("SUCCESS", "SKIPPED")]
        if any(t["timestamp"] >= after for t in done):
            for tick in done:
                what = f"{len(tick['runIds'])} run(s)" if tick["runIds"] else tick["skipReason"]
                say(f"  daemon: {PROMOTION_SENSOR} tick -> {what}")
            return [r for t in done for r in t["runIds"]]
        time.sleep(2)
    raise TimeoutError(
        f"the daemon did not complete a {PROMOTION_SENSOR} tick within {timeout:.0f}s: {errors}"
    )


def automation_sensor_line(instance: dg.DagsterInstance, tenants: list[str], after: float) -> str:
    """What the tenants' automation condition sensors did under the daemon during the demo."""
    from dagster._core.scheduler.instigation import InstigatorType

    names = {automation_sensor_name(t) for t in tenants}
    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    running = [s for s in states if s.name in names and s.is_running]
    ticks = [
        t
        for s in running
        for t in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=after)
    ]
    requested = sum(len(t.run_ids) for t in ticks)
    return (
        f"automation sensors under the daemon: {len(running)} of {len(names)} running, "
        f"{len(ticks)} ticks, {requested} runs requested"
    )


def main(log: str | None = None) -> None:
    console = Console()
    stack = Stack.load()
    os.environ.update(stack.env())
    url = stack.components["webserver"].url
    log_path = Path(log or stack.folder / "demo.log").resolve()
    started = time.time()
    locations = job_locations(url)

    catalogs = load_all()
    tenants = sorted(catalogs)
    with dg.DagsterInstance.get() as instance:
        progress = Progress(instance, log_path, console.print)
        console.rule(f"Launching every tenant's pipeline through {url} (run queue, daemon)")
        console.print(f"[dim]full event log: {log_path}[/dim]")
        runs = {}
        for tenant in tenants:
            job = pipeline_job_name(tenant)
            run_id = launch_run(
                url, location_of(locations, job), job, {"mlplat/launched_by": _user()}
            )
            runs[run_id] = tenant
            progress.follow(run_id, tenant)
            console.print(f"  queued {job} (run {run_id[:8]})")
        finished = progress.wait(list(runs), timeout=3600)
        failed = [
            runs[r] for r, run in finished.items() if run.status != dg.DagsterRunStatus.SUCCESS
        ]
        if failed:
            raise SystemExit(f"pipelines failed: {', '.join(failed)} (events in {log_path})")
        pipelines_done = time.time()

        console.rule("Rolling up today's cost per tenant")
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        # Each tenant's cost asset lives in the tenant's own code location.
        cost_runs = []
        for tenant in tenants:
            cost_run = launch_run(
                url,
                location_of(locations, pipeline_job_name(tenant)),
                "__ASSET_JOB",
                {"dagster/partition": today, "tenant": tenant},
                asset_selection=[[tenant, "cost"]],
            )
            progress.follow(cost_run, "cost")
            cost_runs.append(cost_run)
        costs = progress.wait(cost_runs, timeout=600)
        if any(run.status != dg.DagsterRunStatus.SUCCESS for run in costs.values()):
            raise SystemExit(f"cost rollups failed (events in {log_path})")

        console.rule("Promotion: the daemon's sensor submits what qualifies")
        # The platform's sensors live in the platform location, with its governance jobs.
        location = location_of(locations, "promote_model")
        promoted = promotion_runs(
            url, location, started, pipelines_done, timeout=420, say=console.print
        )
        for run_id in promoted:
            progress.follow(run_id, "promotion")
        outcome = progress.wait(promoted, timeout=600)
        bad = [r for r, run in outcome.items() if run.status != dg.DagsterRunStatus.SUCCESS]
        if bad:
            raise SystemExit(f"promotion runs failed: {bad} (events in {log_path})")
        # Everything was fresh, so the tenants' automation sensors requested nothing, unless a
        # tick of a YAML schedule fell within the demo: then only its sources refreshed (the
        # generators' same rows), and nothing below them.
        console.print(f"  {automation_sensor_line(instance, tenants, started)}")

        console.rule("Approval workflow")
        for line in walk(console):
            console.print(f"  {line}")

        console.rule("Batch scores and drift by each champion, through the run queue")
        scoring = []
        for tenant in tenants:
            selection = [
                [tenant, kind, model]
                for model in catalogs[tenant].models
                for kind in ("predictions", "drift")
            ]
            run_id = launch_run(
                url,
                location_of(locations, pipeline_job_name(tenant)),
                "__ASSET_JOB",
                {"tenant": tenant},
                asset_selection=selection,
            )
            progress.follow(run_id, tenant)
            scoring.append(run_id)
        scored = progress.wait(scoring, timeout=900)
        if any(run.status != dg.DagsterRunStatus.SUCCESS for run in scored.values()):
            raise SystemExit(f"batch scores or drift failed (events in {log_path})")
        with warnings.catch_warnings():
            # Beta notices of Dagster APIs we pin and test; the daemon's log has them too.
            warnings.simplefilter("ignore", category=dg.BetaWarning)
            definitions = defs()
        console.print(summary(definitions, instance))
    console.print(
        f"services demo took {time.time() - started:.0f}s; UI: {url}; full log: {log_path}"
    )


def _user() -> str:
    return os.environ.get("MLPLAT_USER", "system")
