"""Reads the cost metadata recorded by metered steps from the Dagster event log and sums it.

The event log is the source of truth: every metered step leaves one event carrying `cost/*`
metadata (its materialization, or when it failed the observation `meter` records), so a rollup is
a read plus a group-by, and re-running it gives the same numbers. `billed_event` decides once what
counts, for these rollups and the budget ledger alike.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # pandas loads in the steps and commands, not with the code location
    import pandas as pd

    from platform_assets.resources.lake import LakeResource, Snapshot

COST_KEY = "cost/usd"
PLATFORM = "platform"
LEDGER_KIND = "cost_ledger"  # lake kind of the daily ledgers: <tenant>/cost_ledger/<YYYY-MM-DD>


@dataclass(frozen=True)
class StepCost:
    """One ledger row: one recorded step of one asset (partition) in one run."""

    tenant: str
    asset_key: str
    partition: str
    run_id: str
    timestamp: float
    usd: float
    cpu_seconds: float
    wall_seconds: float
    peak_memory_gib: float

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.timestamp, UTC).strftime("%Y-%m-%d")


LEDGER_COLUMNS = [f.name for f in fields(StepCost)]


def _value(metadata: dict, key: str) -> float:
    entry = metadata.get(key)
    return float(entry.value) if entry is not None else 0.0


def tenant_asset_keys(instance: dg.DagsterInstance, tenant: str | None = None) -> list[dg.AssetKey]:
    """Asset keys the instance has seen for one tenant (or all tenants), platform assets aside."""
    keys = instance.get_asset_keys(prefix=[tenant] if tenant else None)
    return sorted(
        (k for k in keys if k.path[0] != PLATFORM and k.path[1:] != ["cost"]),
        key=lambda k: k.to_user_string(),
    )


NUMERIC = (COST_KEY, "cost/cpu_seconds", "cost/wall_seconds", "cost/peak_memory_gib")
COST_EVENTS = (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION)


def billed_event(record) -> tuple[dg.AssetMaterialization | dg.AssetObservation, bool] | None:
    """(the asset event, whether its step failed) when the event's cost counts, else None.

    Counts: cost metadata on a materialization (the step succeeded) or on the observation `meter`
    records when a step fails (`cost/failed`), emitted by a step of a run (never runless: a cost
    reported from outside a run is not a measurement), every measured number finite and not
    negative, for an asset of the tenant the metadata bills (a step cannot bill another tenant).
    """
    entry = record.event_log_entry
    event = entry.dagster_event
    if event is None or not entry.run_id or not entry.step_key:
        return None
    if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
        asset_event, failed = event.step_materialization_data.materialization, False
    elif event.event_type == dg.DagsterEventType.ASSET_OBSERVATION:
        asset_event, failed = event.asset_observation_data.asset_observation, True
        if "cost/failed" not in asset_event.metadata:
            return None
    else:
        return None
    md = asset_event.metadata
    if COST_KEY not in md or "cost/tenant" not in md:
        return None
    try:
        values = [_value(md, k) for k in NUMERIC]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return None
    path = asset_event.asset_key.path
    if path[0] == PLATFORM or path[0] != str(md["cost/tenant"].value):
        return None
    return asset_event, failed


def _step(record, key: dg.AssetKey) -> StepCost | None:
    billed = billed_event(record)
    if billed is None:
        return None
    md = billed[0].metadata
    return StepCost(
        tenant=key.path[0],
        asset_key=key.to_user_string(),
        partition=getattr(billed[0], "partition", None) or "",
        run_id=record.run_id,
        timestamp=record.timestamp,
        usd=_value(md, COST_KEY),
        cpu_seconds=_value(md, "cost/cpu_seconds"),
        wall_seconds=_value(md, "cost/wall_seconds"),
        peak_memory_gib=_value(md, "cost/peak_memory_gib"),
    )


def step_costs(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey], start: datetime, end: datetime
) -> list[StepCost]:
    """Every recorded step of `keys` with start <= time < end that carries cost metadata."""
    out = []
    for key in keys:
        for fetch in (instance.fetch_materializations, instance.fetch_observations):
            cursor = None
            while True:
                result = fetch(
                    dg.AssetRecordsFilter(
                        asset_key=key,
                        after_timestamp=start.timestamp(),
                        before_timestamp=end.timestamp(),
                    ),
                    limit=1000,
                    cursor=cursor,
                )
                out += [s for s in (_step(r, key) for r in result.records) if s is not None]
                if not result.has_more:
                    break
                cursor = result.cursor
    return sorted(out, key=lambda s: s.timestamp)


def all_steps(instance: dg.DagsterInstance, start: datetime, end: datetime) -> list[StepCost]:
    """Every tenant's recorded steps in [start, end), in one paginated scan per event type.

    One query per page instead of one per asset key: with a thousand assets the per-key queries,
    not the events, dominate.
    """
    out = []
    for event_type in COST_EVENTS:
        after = None
        while True:
            records = instance.event_log_storage.get_event_records(
                dg.EventRecordsFilter(
                    event_type=event_type,
                    after_timestamp=start.timestamp(),
                    before_timestamp=end.timestamp(),
                    after_cursor=after,
                ),
                limit=5000,
                ascending=True,
            )
            for record in records:
                key = record.asset_key
                if key is None or key.path[0] == PLATFORM:
                    continue
                step = _step(record, key)
                if step is not None:
                    out.append(step)
            if len(records) < 5000:
                break
            after = records[-1].storage_id
    return sorted(out, key=lambda s: s.timestamp)


def tenant_steps(
    instance: dg.DagsterInstance, start: datetime, end: datetime, tenant: str | None = None
) -> list[StepCost]:
    """One tenant's steps (a query per asset key), or every tenant's (one scan)."""
    if tenant is None:
        return all_steps(instance, start, end)
    return step_costs(instance, tenant_asset_keys(instance, tenant), start, end)


def ledger_frame(steps: list[StepCost]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame([asdict(s) for s in steps], columns=LEDGER_COLUMNS)
    # The same day as StepCost.day (Python's rounding), so both rollups agree at midnight.
    frame["day"] = [s.day for s in steps]
    return frame


def rollup(steps: list[StepCost]) -> dict[tuple[str, str, str], float]:
    """USD per (tenant, asset, day)."""
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for s in steps:
        totals[(s.tenant, s.asset_key, s.day)] += s.usd
    return dict(totals)


def rollup_frame(ledger: pd.DataFrame) -> pd.DataFrame:
    """The same rollup as `rollup`, vectorised for large ledgers (tenant, asset, day -> sums)."""
    return (
        ledger.groupby(["tenant", "asset_key", "day"], as_index=False)
        .agg(
            steps=("usd", "size"),
            usd=("usd", "sum"),
            cpu_seconds=("cpu_seconds", "sum"),
            wall_seconds=("wall_seconds", "sum"),
            peak_memory_gib=("peak_memory_gib", "max"),
        )
        .sort_values(["tenant", "asset_key", "day"], ignore_index=True)
    )


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[first instant of YYYY-MM, first instant of the next month) in UTC."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"month {month!r} must look like YYYY-MM") from exc
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def _read_ledger_snapshots(lake: LakeResource, snapshots: list[Snapshot]) -> pd.DataFrame:
    """The rows of daily ledger snapshots; the day is the snapshot's name (its partition)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as pads

    if not snapshots:
        return pd.DataFrame(columns=[*LEDGER_COLUMNS, "day"])
    fs, base = lake.filesystem()
    files = {f"{base}/{s.tenant}/{s.kind}/{s.name}/{s.version}.parquet": s.name for s in snapshots}
    # One scan over every file (read ahead in parallel), not one read per tenant-day; each
    # batch says which file, so which day, it came from.
    scanner = pads.dataset(list(files), filesystem=fs, format="parquet").scanner(
        columns=LEDGER_COLUMNS
    )
    batches, days = [], []
    for tagged in scanner.scan_batches():
        batches.append(tagged.record_batch)
        days += [files[tagged.fragment.path]] * tagged.record_batch.num_rows
    df = pa.Table.from_batches(batches, scanner.projected_schema).to_pandas()
    df["day"] = days
    return df


def _ledger_days(lake: LakeResource, tenants: list[str], days: set[str]) -> list[Snapshot]:
    """The current snapshot of each of the tenants' daily ledgers named in `days`."""
    return [
        lake.current(tenant, LEDGER_KIND, day)
        for tenant in tenants
        for day in lake.names(tenant, LEDGER_KIND)
        if day in days
    ]


def read_ledger(lake: LakeResource, month: str, tenants: list[str] | None = None) -> pd.DataFrame:
    """Every tenant's ledger rows for a month, from the daily snapshots the cost assets write.

    The scalable path: each day's ledger is extracted from the event log once, by its partition.
    """
    start, end = month_bounds(month)
    days = {(start + timedelta(days=d)).strftime("%Y-%m-%d") for d in range((end - start).days)}
    return _read_ledger_snapshots(lake, _ledger_days(lake, tenants or lake.tenants(), days))


def ledger_between(
    instance: dg.DagsterInstance,
    lake: LakeResource,
    tenants: list[str],
    start: datetime,
    end: datetime,
) -> pd.DataFrame:
    """The tenants' ledger rows for the whole UTC days in [start, end).

    A tenant-day comes from its ledger snapshot when the snapshot is closed, i.e. written after
    the day ended (a later step cannot be missing from it); every other tenant-day (no snapshot
    yet, or one written while the day was still going) comes from one scan of the event log. So
    the result always equals the recorded steps, and at scale only the open days are read from
    the event log.
    """
    import pandas as pd

    days, day = {}, start
    while day < end:
        days[day.strftime("%Y-%m-%d")] = day + timedelta(days=1)
        day += timedelta(days=1)
    found = {(s.tenant, s.name): s for s in _ledger_days(lake, tenants, set(days))}
    closed, open_days = [], set()
    for tenant in tenants:
        for label, day_end in days.items():
            snapshot = found.get((tenant, label))
            if snapshot is not None and snapshot.written_at >= day_end:
                closed.append(snapshot)
            else:
                open_days.add((tenant, label))
    frames = [_read_ledger_snapshots(lake, closed)]
    if open_days:
        first = datetime.strptime(min(d for _, d in open_days), "%Y-%m-%d").replace(tzinfo=UTC)
        steps = [s for s in all_steps(instance, first, end) if (s.tenant, s.day) in open_days]
        frames.append(ledger_frame(steps))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _read_ledger_snapshots(lake, [])
