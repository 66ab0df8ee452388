"""Bills the steps whose process died before it could bill itself: SIGKILL, the OOM killer, a pod
eviction. Such a step records nothing at its end, but the platform observed it: `meter` left its
started row in the ledger (tenant, asset, granted resources), Dagster recorded its STEP_START, and
its end is its step's failure event (the executor reports a crashed child or a failed pod) or
else its run's end. The reconciler bills that span x the granted resources, as an observation
on the step's asset in the step's own run, the event every rollup already counts
(`rollup.billed_event`), so the ledger, the showback and the budget agree.

It runs at each budget-sensor tick (`cost/sensors.py`), under the ledger's write lock, and only
for finished runs: a step of a running run may still bill itself.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.events import AssetObservationData, DagsterEvent

from platform_assets.cost import ledger
from platform_assets.cost.metering import Usage
from platform_assets.cost.rollup import billed_event
from platform_assets.resources.pricing import PriceCatalog
from platform_assets.tenancy.runs import attributed_tenant
from platform_assets.tenancy.specs import ComputeResources

if TYPE_CHECKING:
    import sqlalchemy as sa

FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}
STEP_ENDS = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
}
RUN_EVENTS = {
    dg.DagsterEventType.STEP_START,
    *STEP_ENDS,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_OBSERVATION,
}
MEASURED_BY = "platform: STEP_START to {end} x the granted resources"
KILLED = (
    "the step's process ended without billing itself (SIGKILL, OOM kill or eviction); "
    "billed from its STEP_START to {end}"
)


@dataclass(frozen=True)
class KilledStep:
    run_id: str
    step_key: str
    tenant: str
    asset_key: str
    started: float
    ended: float
    ended_by: str
    usd: float

    @property
    def wall_seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Reconciled:
    billed: list[KilledStep]
    refused: list[str]  # started rows not billed, and why


def reconcile(
    instance: dg.DagsterInstance,
    prices: PriceCatalog | None = None,
    engine: sa.Engine | None = None,
) -> Reconciled:
    """Close every open started row of a finished run: a step that billed itself is closed as
    it is; one that did not is billed from what the platform observed."""
    import sqlalchemy as sa

    t = ledger.schema()
    engine = engine or ledger.ledger_engine()
    ledger_id = ledger.ledger_id(instance, engine)
    prices = prices or PriceCatalog.load()
    result = Reconciled([], [])
    with engine.begin() as conn:
        # One reconciler at a time: a second one waits, then finds these rows closed.
        ledger.write_lock(conn)
        rows = (
            conn.execute(
                sa.select(t.started).where(
                    t.started.c.ledger == ledger_id, t.started.c.closed_at.is_(None)
                )
            )
            .mappings()
            .all()
        )
        by_run: dict[str, list] = defaultdict(list)
        for row in rows:
            by_run[row["run_id"]].append(row)
        for run_id, steps in by_run.items():
            record = instance.get_run_record_by_id(run_id)
            if record is not None and record.dagster_run.status not in FINISHED:
                continue
            for row in steps:
                outcome = _reconcile_step(instance, record, row, prices, result)
                conn.execute(
                    sa.update(t.started)
                    .where(
                        t.started.c.ledger == ledger_id,
                        t.started.c.run_id == run_id,
                        t.started.c.step_key == row["step_key"],
                    )
                    .values(closed_at=time.time(), outcome=outcome[:200])
                )
    return result


def _reconcile_step(
    instance: dg.DagsterInstance, record, row, prices: PriceCatalog, result: Reconciled
) -> str:
    """Bill one started step of a finished run unless it billed itself; returns the outcome."""
    where = f"step {row['step_key']} of run {row['run_id']}"
    if record is None:
        result.refused.append(f"{where}: the run was deleted, nothing observed to bill from")
        return "not billed: run deleted"
    run = record.dagster_run
    owner = attributed_tenant(run)
    if owner is not None and owner != row["tenant"]:
        result.refused.append(
            f"{where}: its started row bills tenant {row['tenant']!r} but the run was launched "
            f"from tenant {owner!r}'s code location"
        )
        return f"not billed: launched by {owner}"
    events = [
        r
        for r in instance.get_records_for_run(run.run_id, of_type=RUN_EVENTS).records
        if r.event_log_entry.step_key == row["step_key"]
    ]
    if any(billed_event(r) is not None for r in events):
        return "billed by the step"
    started = max(
        (r.timestamp for r in events if r.event_type == dg.DagsterEventType.STEP_START),
        default=row["started_at"],
    )
    ends = [r.timestamp for r in events if r.event_type in STEP_ENDS and r.timestamp >= started]
    if ends:
        ended, ended_by = min(ends), "its step's failure"
    else:
        ended, ended_by = record.end_time or time.time(), "its run's end"
    granted = ComputeResources(cpu=row["cpu"], memory_gib=row["memory_gib"], gpu=row["gpu"])
    usage = Usage(
        tenant=row["tenant"],
        requested=granted,
        wall_seconds=max(ended - started, 0.0),
        measured_by=MEASURED_BY.format(end=ended_by),
    )
    metadata = {**usage.metadata(prices), "cost/failed": KILLED.format(end=ended_by)}
    observation = dg.AssetObservation(
        asset_key=dg.AssetKey.from_user_string(row["asset_key"]), metadata=metadata
    )
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_OBSERVATION.value,
            job_name=run.job_name,
            step_key=row["step_key"],
            event_specific_data=AssetObservationData(observation),
            message=f"Billed {where}: {KILLED.format(end=ended_by)}",
        ),
        run_id=run.run_id,
    )
    killed = KilledStep(
        run.run_id,
        row["step_key"],
        row["tenant"],
        row["asset_key"],
        started,
        ended,
        ended_by,
        float(metadata["cost/usd"]),  # as billed: rounded as every step's bill is
    )
    result.billed.append(killed)
    return f"billed by the reconciler to {ended_by}"
