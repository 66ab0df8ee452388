"""`mlplat metrics`: the platform's health as Prometheus series, read from the Dagster instance,
the cost ledger, the platform's limits and the serving request logs.

Dagster OSS has no metrics endpoint, so this exporter reads its storage. A scrape reads only
what changed since the last one: runs updated after a watermark (columns of the run storage),
each finished run's step events once, materializations after a storage-id cursor,
request-log batches not read yet, check executions above each check's last read id; everything is
aggregated in memory. Run and check counters count from `history_days` before the exporter
started; step counters from its start (Prometheus' `rate` and `increase` handle the reset at a
restart).

Label values come only from what the platform defines. A run counts for the tenant of the code
location that launched it (`tenancy.runs.attributed_tenant`), never for its `tenant` tag; a run
no location launched is `unknown`; a tenant, job or asset the tenants' YAML and the platform's
jobs do not define is `other`. Every folded value is counted in `mlplat_exporter_folded_labels`,
so a free-form tag can neither grow the series without bound nor vanish unseen.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from platform_assets.cost import ledger
from platform_assets.observability import series as S
from platform_assets.observability.slo import TenantAssets, freshness_policies
from platform_assets.tenancy.catalog import (
    PlatformConfigError,
    TenantCatalog,
    defs_root,
    folder_stamp,
    load_tenant,
)
from platform_assets.tenancy.isolation import PLATFORM
from platform_assets.tenancy.limits import limits_for
from platform_assets.tenancy.locations import tenant_folders
from platform_assets.tenancy.runs import (
    LOCATION_TAG,
    TAG,
    location_tenant,
    pipeline_job_name,
    run_location,
)
from platform_assets.tenancy.specs import FreshnessSlo

if TYPE_CHECKING:
    import sqlalchemy as sa

    from platform_assets.resources.lake import LakeResource

log = logging.getLogger(__name__)

UNKNOWN_TENANT = "unknown"  # a run no code location launched
OTHER = "other"  # a value the platform does not define
# The job Dagster runs a UI or automation materialization in, in every location.
IMPLICIT_ASSET_JOB = "__ASSET_JOB"
OUTCOMES = {
    dg.DagsterRunStatus.SUCCESS: "success",
    dg.DagsterRunStatus.FAILURE: "failure",
    dg.DagsterRunStatus.CANCELED: "canceled",
}
IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.NOT_STARTED: "not_started",
    dg.DagsterRunStatus.STARTING: "starting",
    dg.DagsterRunStatus.STARTED: "started",
    dg.DagsterRunStatus.CANCELING: "canceling",
}
PAGE = 5000
STATUS_VALUES = [status.value for status in dg.DagsterRunStatus]
# Runs are re-read this far behind the watermark: on Postgres a transaction that stamped an
# earlier update time may commit after one we have read.
RUN_OVERLAP = timedelta(seconds=5)
# Event ids re-read before the cursor, for the same reason (as the cost ledger does).
EVENT_LOOKBACK = {"postgresql": 20}
STEP_EVENTS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
# Check keys per query of the latest execution of each (an IN list of that many names).
CHECK_KEYS_PER_QUERY = 500


class Histogram:
    """Bucket counts, sum and count of one labelled histogram series."""

    __slots__ = ("bounds", "counts", "total", "n")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class Histograms(defaultdict):
    def __init__(self, bounds: tuple[float, ...]):
        super().__init__(lambda: Histogram(bounds))


@dataclass
class RunState:
    tenant: str
    job: str
    status: dg.DagsterRunStatus
    started: bool = False


@dataclass
class Tenants:
    """What the exporter knows from the tenants' YAML, read at its start and again whenever a
    file under the defs root changes (`PlatformState.tenants_interval`)."""

    tenant_assets: TenantAssets
    names: list[str] = field(default_factory=list)
    platform_jobs: frozenset[str] = frozenset()
    config_ok: dict[str, bool] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)
    freshness: dict[dg.AssetKey, FreshnessSlo] = field(default_factory=dict)
    # Every asset check a tenant's definitions declare on its own assets -> that tenant.
    checks: dict[dg.AssetCheckKey, str] = field(default_factory=dict)
    # tenant -> (target, window seconds)
    run_success: dict[str, tuple[float, float]] = field(default_factory=dict)
    root: Path | None = None
    stamp: tuple = ()

    def changed(self) -> bool:
        return self.root is not None and folder_stamp(self.root) != self.stamp

    @property
    def labelled(self) -> set[str]:
        """The tenant label values: every tenant folder, and the platform."""
        return {*self.names, PLATFORM}

    @property
    def jobs(self) -> set[str]:
        """The job label values: each tenant's pipeline, the implicit asset job, the platform's."""
        return {IMPLICIT_ASSET_JOB, *self.platform_jobs, *map(pipeline_job_name, self.names)}

    @classmethod
    def load(
        cls,
        tenant_assets: TenantAssets,
        root: Path | None = None,
        platform_jobs: Iterable[str] = (),
    ) -> Tenants:
        """`tenant_assets` builds one tenant's assets, whose freshness policies are its SLOs;
        `platform_jobs` names the platform location's jobs (the composition root knows them)."""
        root = (root or defs_root()).resolve()
        # Stamped before reading: a file changed while it is read is read again next time.
        tenants = cls(
            tenant_assets,
            root=root,
            stamp=folder_stamp(root),
            platform_jobs=frozenset(platform_jobs),
        )
        load_tenant.cache_clear()  # this process's parsed folders may be stale
        for name in tenant_folders(root):
            tenants.names.append(name)
            try:
                catalog = load_tenant(root / name)
            except PlatformConfigError as exc:
                # Its runs and costs are still exported; its SLOs and serving logs are not.
                log.warning("tenant %s: YAML does not load (%s)", name, exc)
                tenants.config_ok[name] = False
                continue
            tenants.config_ok[name] = True
            tenants.models[name] = sorted(catalog.models)
            assets = list(tenant_assets(catalog))  # built once: the location's whole graph
            tenants.freshness.update(freshness_policies(catalog, lambda _, a=assets: a))
            tenants.checks.update(
                (key, name)
                for assets_def in assets
                for key in assets_def.check_keys
                if key.asset_key.path[0] == name
            )
            tenants.run_success[name] = run_success_target(catalog)
        return tenants


def run_success_target(catalog: TenantCatalog) -> tuple[float, float]:
    """A tenant's run-success SLO: its target and its window in seconds."""
    slo = catalog.tenant.slos.run_success
    return slo.target, slo.window_days * 86400


def run_success_targets(root: Path | None = None) -> dict[str, tuple[float, float]]:
    """Every tenant's run-success SLO, leaving out a tenant whose YAML does not load."""
    root = (root or defs_root()).resolve()
    targets = {}
    for name in tenant_folders(root):
        try:
            targets[name] = run_success_target(load_tenant(root / name))
        except PlatformConfigError as exc:
            log.warning("tenant %s: YAML does not load (%s)", name, exc)
    return targets


@dataclass
class CheckReads:
    """What has been read of one asset check's executions (Dagster's `asset_check_executions`
    rows: one per planned check, completed in place, under the same id, when it is evaluated)."""

    start: int | None = None  # the lowest id the next read reads (None: from history_start)
    top: int = 0  # the highest id read
    waiting: bool = False  # an execution at or below `top` is still in progress
    counted: set[int] = field(default_factory=set)  # ids >= start already counted


@dataclass
class ServingLog:
    """What has been read of one model's request log."""

    read: set[str] = field(default_factory=set)
    requests: Counter = field(default_factory=Counter)  # status -> count
    errors: int = 0
    predictions: int = 0
    latency: Histogram = field(default_factory=lambda: Histogram(S.LATENCY_BUCKETS))


class PlatformState:
    """The aggregates behind the series, brought up to date incrementally by `refresh`."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        tenants: Tenants,
        lake: LakeResource | None = None,
        *,
        history_days: float = 7,
        lake_interval: float = 10.0,
        tenants_interval: float = 30.0,
        engine: sa.Engine | None = None,
        clock=time.time,
    ):
        self.instance = instance
        self.tenants = tenants
        self.lake = lake
        self.lake_interval = lake_interval
        self.tenants_interval = tenants_interval
        self.tenants_checked_at = clock()
        self.engine = engine
        self.clock = clock
        self.lock = threading.Lock()
        start = datetime.fromtimestamp(clock(), UTC) - timedelta(days=history_days)
        self.history_start = start
        self.run_watermark = start
        self.runs: dict[str, RunState] = {}
        self.run_seen: dict[str, datetime] = {}  # run id -> update time read last
        self.finished: Counter = Counter()  # (tenant, job, outcome)
        self.queue_wait = Histograms(S.LONG_BUCKETS)  # (tenant,)
        self.run_duration = Histograms(S.LONG_BUCKETS)  # (tenant, job)
        self.step_duration = Histograms(S.LONG_BUCKETS)  # (tenant, job, step)
        self.step_failures: Counter = Counter()  # (tenant, job, step)
        self.checks: Counter = Counter()  # (tenant, asset, check, severity, passed)
        self.check_reads: dict[dg.AssetCheckKey, CheckReads] = defaultdict(CheckReads)
        self.folded: Counter = Counter()  # label name -> values folded into other/unknown
        self.dropped_cost: set[str] = set()  # ledger tenants that are no tenant folder
        self.cursors: dict[dg.DagsterEventType, int | None] = {}
        self.to_read: list[str] = []  # runs finished since the last refresh
        self.last_materialized: dict[dg.AssetKey, float] = {}
        self.freshness_state: dict[dg.AssetKey, str] = {}
        self.cost: dict[str, float] = {}
        self.seen_event_id: int | None = None
        self.read_once = False  # the first refresh reads the history, whatever the log holds
        self.serving: dict[tuple[str, str], ServingLog] = defaultdict(ServingLog)
        self.lake_read_at = float("-inf")
        self.refresh_seconds = 0.0
        self._bootstrap_materializations()

    # ---------------------------------------------------------------------------------------
    # Reading what changed
    # ---------------------------------------------------------------------------------------

    def refresh(self) -> None:
        with self.lock:
            started = time.perf_counter()
            now = self.clock()
            if now - self.tenants_checked_at >= self.tenants_interval:
                self._reload_tenants(now)
            latest = self.instance.event_log_storage.get_maximum_record_id()
            # Every run status change, step, check and materialization is an event: when the
            # log has not grown, nothing the Dagster series show has changed.
            if latest != self.seen_event_id or not self.read_once:
                self._refresh_runs()
                self._refresh_steps()
                self._refresh_checks()
                self._refresh_materializations()
                self._refresh_cost()
                self._refresh_freshness_state()
                self.seen_event_id = latest
                self.read_once = True
            if self.lake is not None and now - self.lake_read_at >= self.lake_interval:
                self._refresh_serving()
                self.lake_read_at = now
            self.refresh_seconds = time.perf_counter() - started

    def _reload_tenants(self, now: float) -> None:
        """Read the tenants' YAML again if a file under the defs root changed: new tenants,
        models and SLOs get their series; freshness starts from each new asset's record."""
        self.tenants_checked_at = now
        if not self.tenants.changed():
            return
        self.tenants = Tenants.load(
            self.tenants.tenant_assets, self.tenants.root, self.tenants.platform_jobs
        )
        log.info("tenant YAML changed: %d tenant(s) read again", len(self.tenants.names))
        self._bootstrap_materializations()
        self.read_once = False  # the freshness state of the new policies, this refresh

    def _refresh_runs(self) -> None:
        """Runs updated since the watermark, read as columns of the run storage (SQL, no run
        bodies to deserialize): `status IN (...)` lets the storage's (status, update_timestamp)
        index find them, however many runs it holds."""
        import sqlalchemy as sa
        from dagster._core.storage.runs.schema import RunsTable

        columns = [
            RunsTable.c.run_id,
            RunsTable.c.pipeline_name,
            RunsTable.c.status,
            RunsTable.c.create_timestamp,
            RunsTable.c.update_timestamp,
            RunsTable.c.start_time,
            RunsTable.c.end_time,
        ]
        after = (self.run_watermark - RUN_OVERLAP).replace(tzinfo=None)
        limit = PAGE
        with self.instance.run_storage.connect() as conn:
            while True:
                rows = conn.execute(
                    sa.select(*columns)
                    .where(
                        RunsTable.c.status.in_(STATUS_VALUES),
                        RunsTable.c.update_timestamp > after,
                    )
                    .order_by(RunsTable.c.update_timestamp, RunsTable.c.id)
                    .limit(limit)
                ).all()
                fresh = [r for r in rows if self.run_seen.get(r.run_id) != r.update_timestamp]
                # What launched a run does not change: its labels are read once.
                new = [r.run_id for r in fresh if r.run_id not in self.runs]
                owners = self._run_tenants(conn, new) if new else {}
                for row in fresh:
                    self._observe_run(row, owners.get(row.run_id))
                if rows:
                    # Never past the exporter's clock: a run stamped in its future (skew)
                    # would otherwise hide every run stamped before it from later reads.
                    newest = min(rows[-1].update_timestamp.replace(tzinfo=UTC), _now(self.clock))
                    self.run_watermark = max(self.run_watermark, newest)
                if len(rows) < limit:
                    return
                if not fresh:
                    # A full page of runs stamped within one instant: read a larger one.
                    limit *= 2
                    continue
                # The filter is strict: step back one microsecond so ties at the page's end
                # are read again (and skipped as seen).
                after = rows[-1].update_timestamp - timedelta(microseconds=1)

    def _run_tenants(self, conn, run_ids: list[str]) -> dict[str, str | None]:
        """The tenant each run counts for (`attributed_tenant`), by run id. Dagster's
        `dagster/code_location` tag, which it writes from a run's remote origin over whatever
        the launcher gave, is read with the tenant tags (a join lets SQLite's planner scan the
        tag table per run); only a run without it (`dagster job execute`, or executed in a
        process holding the instance) is read whole, for the code it loaded."""
        import sqlalchemy as sa
        from dagster._core.storage.runs.schema import RunTagsTable

        tags: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        for run_id, key, value in conn.execute(
            sa.select(RunTagsTable.c.run_id, RunTagsTable.c.key, RunTagsTable.c.value).where(
                RunTagsTable.c.run_id.in_(run_ids),
                RunTagsTable.c.key.in_([TAG, LOCATION_TAG]),
            )
        ):
            tags[run_id][key] = value
        locations = {run_id: t.get(LOCATION_TAG) for run_id, t in tags.items()}
        unlabelled = [run_id for run_id, location in locations.items() if location is None]
        if unlabelled:
            for run in self.instance.get_runs(dg.RunsFilter(run_ids=unlabelled)):
                locations[run.run_id] = run_location(run)
        return {
            run_id: location_tenant(locations[run_id], tags[run_id].get(TAG)) for run_id in run_ids
        }

    def _label(self, name: str, value: str | None, known: set[str]) -> str:
        """`value` when the platform defines it, else `unknown` (None) or `other`, counted."""
        if value in known:
            return value
        self.folded[(PLATFORM, name)] += 1
        return UNKNOWN_TENANT if value is None else OTHER

    def _observe_run(self, row, tenant: str | None) -> None:
        self.run_seen[row.run_id] = row.update_timestamp
        status = dg.DagsterRunStatus(row.status)
        state = self.runs.get(row.run_id)
        if state is None:
            tenant = self._label("tenant", tenant, self.tenants.labelled)
            job = self._label("job", row.pipeline_name, self.tenants.jobs)
            state = self.runs[row.run_id] = RunState(tenant, job, status)
        elif state.status in OUTCOMES:
            return  # counted once; later updates (tags) change nothing here
        tenant, job = state.tenant, state.job
        state.status = status
        if row.start_time is not None and not state.started:
            state.started = True
            created = row.create_timestamp.replace(tzinfo=UTC).timestamp()
            self.queue_wait[(tenant,)].observe(max(row.start_time - created, 0.0))
        if status in OUTCOMES:
            self.finished[(tenant, job, OUTCOMES[status])] += 1
            if self.read_once:  # not in the first read (the history)
                self.to_read.append(row.run_id)
            if row.start_time is not None and row.end_time is not None:
                duration = max(row.end_time - row.start_time, 0.0)
                self.run_duration[(tenant, job)].observe(duration)

    def _dialect(self) -> str:
        engine = getattr(self.instance.event_log_storage, "_engine", None)
        return engine.dialect.name if engine is not None else "sqlite"

    def _events(self, event_type: dg.DagsterEventType) -> Iterator[dg.EventLogRecord]:
        """Records of an asset event type after its cursor (and a few before it on Postgres),
        oldest first; moves the cursor. Asset events have cross-run ids on every storage."""
        storage = self.instance.event_log_storage
        cursor = self.cursors.get(event_type)
        start = None if cursor is None else max(cursor - EVENT_LOOKBACK.get(self._dialect(), 0), 0)
        while True:
            records = storage.get_event_records(
                dg.EventRecordsFilter(
                    event_type=event_type,
                    after_cursor=start,
                    # The first read starts `history_days` back, not at the log's beginning.
                    after_timestamp=self.history_start.timestamp() if start is None else None,
                ),
                limit=PAGE,
                ascending=True,
            )
            yield from records
            if records:
                start = records[-1].storage_id
                self.cursors[event_type] = max(self.cursors.get(event_type) or 0, start)
            if len(records) < PAGE:
                return

    def _refresh_steps(self) -> None:
        """Steps of the runs that finished since the last refresh: one read of each run's own
        events (run-sharded SQLite has no cross-run cursor for step events)."""
        finished, self.to_read = self.to_read, []
        for run_id in finished:
            run = self.runs[run_id]
            # Step keys come from the definitions of the location that launched the run: named
            # only for a run of a tenant and job the platform defines.
            named = run.tenant in self.tenants.labelled and run.job in self.tenants.jobs
            records = self.instance.get_records_for_run(run_id, of_type=STEP_EVENTS).records
            for record in records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if named:
                    step = entry.step_key or ""
                else:
                    self.folded[(PLATFORM, "step")] += 1
                    step = OTHER
                labels = (run.tenant, run.job, step)
                if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                    seconds = event.event_specific_data.duration_ms / 1000
                    self.step_duration[labels].observe(seconds)
                else:
                    self.step_failures[labels] += 1

    def _refresh_checks(self) -> None:
        """Evaluations of the checks the tenants declare, from Dagster's check execution
        records (the index every storage keeps, SQLite's run shards included): one query for
        the latest execution of every check, then the new executions of the checks whose
        latest moved or that still have one in progress. A check's counts start at
        `history_days`, whenever it was evaluated."""
        storage = self.instance.event_log_storage
        keys = list(self.tenants.checks)
        latest: dict[dg.AssetCheckKey, int] = {}
        for i in range(0, len(keys), CHECK_KEYS_PER_QUERY):
            chunk = keys[i : i + CHECK_KEYS_PER_QUERY]
            found = storage.get_latest_asset_check_execution_by_key(chunk)
            latest.update((key, record.id) for key, record in found.items())
        lookback = EVENT_LOOKBACK.get(self._dialect(), 0)
        for key in keys:
            reads = self.check_reads[key]
            newest = latest.get(key)
            if newest is not None and (newest > reads.top or reads.waiting):
                self._read_check(key, reads, newest, lookback)

    def _check_history(self, key: dg.AssetCheckKey, start: int | None) -> Iterator:
        """The check's execution records, newest first, down to id `start` (None: to the
        first created within the history)."""
        cursor = None
        while True:
            page = self.instance.event_log_storage.get_asset_check_execution_history(
                key, limit=PAGE, cursor=cursor
            )
            for record in page:
                if (
                    record.id < start
                    if start is not None
                    else record.create_timestamp < self.history_start.timestamp()
                ):
                    return
                yield record
            if len(page) < PAGE:
                return
            cursor = page[-1].id

    def _read_check(
        self, key: dg.AssetCheckKey, reads: CheckReads, newest: int, lookback: int
    ) -> None:
        from dagster._core.storage.asset_check_execution_record import (
            COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES as COMPLETED,
        )
        from dagster._core.storage.asset_check_execution_record import (
            AssetCheckExecutionRecordStatus as Status,
        )

        records = list(self._check_history(key, reads.start))
        tenant, asset = self.tenants.checks[key], key.asset_key.to_user_string()
        waiting = []
        for record in reversed(records):
            if record.status in COMPLETED:
                if record.id not in reads.counted:
                    evaluation = record.event.dagster_event.event_specific_data
                    outcome = "true" if evaluation.passed else "false"
                    self.checks[(tenant, asset, key.name, evaluation.severity.value, outcome)] += 1
                    reads.counted.add(record.id)
            elif record.status == Status.PLANNED and self._running(record.run_id):
                waiting.append(record.id)
        # Read down from at least `newest`: what is not among the records is before the history.
        reads.top = max(reads.top, newest, records[0].id if records else 0)
        reads.waiting = bool(waiting)
        if reads.start is None:  # never below the history's first id, lookback or not
            reads.start = records[-1].id if records else reads.top + 1
        # Settled up to the top, but for what a running run may still evaluate; on Postgres a
        # row may also commit after a higher id was read, so a few ids below are read again.
        floor = min(waiting) if waiting else reads.top + 1
        reads.start = max(reads.start, floor - lookback)
        reads.counted = {i for i in reads.counted if i >= reads.start}

    def _running(self, run_id: str) -> bool:
        """Whether a run may still evaluate checks: not finished, as far as the runs read so far
        say; a run they do not hold (older than the history, or newer than this refresh's read)
        is asked for."""
        state = self.runs.get(run_id)
        if state is not None and state.status in OUTCOMES:
            return False
        if state is None:
            run = self.instance.get_run_by_id(run_id)
            return run is not None and not run.is_finished
        return True

    def _refresh_materializations(self) -> None:
        # Re-read records only move a maximum: reading one twice is harmless.
        for record in self._events(dg.DagsterEventType.ASSET_MATERIALIZATION):
            key = record.event_log_entry.dagster_event.asset_key
            if key in self.tenants.freshness:
                previous = self.last_materialized.get(key, 0.0)
                self.last_materialized[key] = max(previous, record.timestamp)

    def _bootstrap_materializations(self) -> None:
        """The last materialization of each asset with a policy, from the asset records (one
        query), so freshness does not depend on how far back the history goes."""
        keys = list(self.tenants.freshness)
        if not keys:
            return
        for record in self.instance.get_asset_records(keys):
            last = record.asset_entry.last_materialization_record
            if last is not None:
                self.last_materialized[record.asset_entry.asset_key] = last.timestamp

    def _refresh_freshness_state(self) -> None:
        keys = list(self.tenants.freshness)
        if keys:
            records = self.instance.get_freshness_state_records(keys)
            self.freshness_state = {k: r.freshness_state.value for k, r in records.items()}

    def _refresh_cost(self) -> None:
        import sqlalchemy as sa

        engine = self.engine or ledger.ledger_engine()
        ledger.refresh(self.instance, engine)
        month = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m")
        totals = ledger.schema().totals
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(totals.c.tenant, totals.c.usd).where(
                    totals.c.ledger == ledger.ledger_id(self.instance, engine),
                    totals.c.month == month,
                )
            ).all()
        self.cost = {tenant: usd for tenant, usd in rows}

    def _refresh_serving(self) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        fs, _ = self.lake.filesystem()
        for tenant, models in self.tenants.models.items():
            for model in models:
                served = self.serving[(tenant, model)]
                new = [
                    p for p in self.lake.log_files(tenant, "serving", model) if p not in served.read
                ]
                for path in new:
                    table = pq.read_table(
                        path,
                        filesystem=fs,
                        columns=["request_id", "status", "error", "latency_ms", "prediction"],
                    )
                    served.predictions += len(table) - table["prediction"].null_count
                    # One request is one row per entity: count requests, not rows.
                    requests = table.group_by("request_id").aggregate(
                        [("status", "max"), ("latency_ms", "max"), ("error", "count")]
                    )
                    for status, count in zip(
                        *pc.value_counts(requests["status_max"]).flatten(), strict=True
                    ):
                        served.requests[str(status.as_py())] += count.as_py()
                    served.errors += pc.sum(pc.greater(requests["error_count"], 0)).as_py() or 0
                    for latency in requests["latency_ms_max"].to_pylist():
                        if latency is not None:
                            served.latency.observe(latency / 1000)
                    served.read.add(path)

    # ---------------------------------------------------------------------------------------
    # Series
    # ---------------------------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        now = self.clock()
        yield from self._run_families()
        yield from self._freshness_families(now)
        yield from self._cost_families(now)
        yield from self._serving_families()
        yield _counter(S.FOLDED_LABELS, self.folded)
        ok = _gauge(S.TENANT_CONFIG_OK)
        for tenant, loaded in sorted(self.tenants.config_ok.items()):
            ok.add_metric([tenant], 1.0 if loaded else 0.0)
        yield ok
        refresh = _gauge(S.REFRESH_SECONDS)
        refresh.add_metric(["platform"], self.refresh_seconds)
        yield refresh

    def _run_families(self) -> Iterator[Metric]:
        yield _counter(S.RUNS, self.finished)
        in_progress: Counter = Counter(
            (r.tenant, IN_PROGRESS[r.status]) for r in self.runs.values() if r.status in IN_PROGRESS
        )
        gauge = _gauge(S.RUNS_IN_PROGRESS)
        for tenant in self.tenants.names:
            for status in IN_PROGRESS.values():
                in_progress.setdefault((tenant, status), 0)
        for labels, value in sorted(in_progress.items()):
            gauge.add_metric(list(labels), value)
        yield gauge
        yield _histogram(S.RUN_QUEUE_WAIT, self.queue_wait)
        yield _histogram(S.RUN_DURATION, self.run_duration)
        yield _histogram(S.STEP_DURATION, self.step_duration)
        yield _counter(S.STEP_FAILURES, self.step_failures)
        yield _counter(S.CHECKS, self.checks)
        target, window = _gauge(S.SLO_TARGET), _gauge(S.SLO_WINDOW)
        for tenant, (goal, seconds) in sorted(self.tenants.run_success.items()):
            target.add_metric([tenant, "run_success"], goal)
            window.add_metric([tenant, "run_success"], seconds)
        for key, slo in sorted(self.tenants.freshness.items(), key=lambda kv: kv[0].path):
            name = f"freshness:{key.to_user_string()}"
            target.add_metric([key.path[0], name], slo.target)
            window.add_metric([key.path[0], name], slo.window_days * 86400)
        yield target
        yield window

    def _freshness_families(self, now: float) -> Iterator[Metric]:
        last, lag = _gauge(S.LAST_MATERIALIZATION), _gauge(S.FRESHNESS_LAG)
        fail, warn, state = (
            _gauge(S.FRESHNESS_FAIL),
            _gauge(S.FRESHNESS_WARN),
            _gauge(S.FRESHNESS_STATE),
        )
        for key, slo in sorted(self.tenants.freshness.items(), key=lambda kv: kv[0].path):
            labels = [key.path[0], key.to_user_string()]
            fail.add_metric(labels, slo.fail_after_hours * 3600)
            if slo.warn_after_hours is not None:
                warn.add_metric(labels, slo.warn_after_hours * 3600)
            if key in self.last_materialized:
                last.add_metric(labels, self.last_materialized[key])
                lag.add_metric(labels, max(now - self.last_materialized[key], 0.0))
            if key in self.freshness_state:
                state.add_metric([*labels, self.freshness_state[key]], 1.0)
        yield from (last, lag, fail, warn, state)

    def _cost_families(self, now: float) -> Iterator[Metric]:
        moment = datetime.fromtimestamp(now, UTC)
        month_start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        elapsed = (moment - month_start) / (next_month - month_start)
        mtd, budget, warn = _gauge(S.COST_MTD), _gauge(S.BUDGET), _gauge(S.BUDGET_WARN)
        burn, projected = _gauge(S.BURN_RATE), _gauge(S.COST_PROJECTED)
        for tenant in sorted(set(self.cost) - set(self.tenants.names) - self.dropped_cost):
            # A ledger tenant that is no tenant folder (removed since): no budget to show.
            self.dropped_cost.add(tenant)
            self.folded[(PLATFORM, "tenant")] += 1
        for tenant in sorted(self.tenants.names):
            spent = self.cost.get(tenant, 0.0)
            limit = limits_for(tenant).budget
            mtd.add_metric([tenant], spent)
            budget.add_metric([tenant], limit.monthly_usd)
            warn.add_metric([tenant], limit.warn_at)
            burn.add_metric([tenant], spent / limit.monthly_usd / elapsed if elapsed else 0.0)
            projected.add_metric([tenant], spent / elapsed if elapsed else 0.0)
        yield from (mtd, budget, warn, burn, projected)

    def _serving_families(self) -> Iterator[Metric]:
        requests, errors = _counter(S.SERVING_REQUESTS, {}), _counter(S.SERVING_ERRORS, {})
        predictions = _counter(S.SERVING_PREDICTIONS, {})
        latency = _histogram(S.SERVING_LATENCY, {})
        for (tenant, model), served in sorted(self.serving.items()):
            for status, count in sorted(served.requests.items()):
                requests.add_metric([tenant, model, status], count)
            errors.add_metric([tenant, model], served.errors)
            predictions.add_metric([tenant, model], served.predictions)
            latency.add_metric(
                [tenant, model], served.latency.buckets(), sum_value=served.latency.total
            )
        yield from (requests, errors, predictions, latency)


def _now(clock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def _counter(series: S.Series, values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(series.name, series.help, labels=series.labels)
    for labels, value in sorted(values.items()):
        family.add_metric(list(labels), value)
    return family


def _gauge(series: S.Series) -> GaugeMetricFamily:
    return GaugeMetricFamily(series.name, series.help, labels=series.labels)


def _histogram(series: S.Series, values: dict) -> HistogramMetricFamily:
    family = HistogramMetricFamily(series.name, series.help, labels=series.labels)
    for labels, hist in sorted(values.items()):
        family.add_metric(list(labels), hist.buckets(), sum_value=hist.total)
    return family


class PlatformCollector(Collector):
    """A scrape: bring the aggregates up to date, then describe them."""

    def __init__(self, state: PlatformState):
        self.state = state

    def collect(self) -> Iterable[Metric]:
        self.state.refresh()
        return list(self.state.families())


def registry_for(state: PlatformState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(state))
    return registry


def serve(state: PlatformState, host: str, port: int):
    """Serve `/metrics` on host:port in a background thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    state.refresh()  # the first read (the history) before the first scrape asks for it
    return start_http_server(port, addr=host, registry=registry_for(state))
