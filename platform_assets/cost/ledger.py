"""Month-to-date spend per tenant, maintained incrementally from the Dagster event log.

`refresh` reads only the cost events recorded since its cursor (event storage id, per event type)
and inserts one row per billed step, keyed by the event's storage id, with the per-tenant-month
totals updated in the same transaction. Re-reading a few ids before the cursor (ids may commit out
of order) and concurrent refreshes are harmless: a row that exists is not inserted again, and
totals only grow by the rows actually inserted. A budget check is then a refresh of the few new
events plus one primary-key read, however many steps the month holds.

What counts is `rollup.billed_event`'s rule, the same as the showback's.

Every metered step also leaves a *started* row here when it begins (`record_start`): who it bills,
when it started and the resources the platform granted it. A step whose process dies without a
bill (SIGKILL, the OOM killer, a pod eviction) leaves that row open; `cost/reconcile.py` closes it
with a bill from what the platform observed.
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.cost.rollup import COST_EVENTS, COST_KEY, billed_event
from platform_assets.env import platform_db_url
from platform_assets.tenancy.specs import ComputeResources

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import sqlalchemy as sa

LEDGER_ID_KEY = "mlplat/cost/ledger_id"
# Ids below the cursor re-read on Postgres, where concurrent inserts may commit an older id after
# a newer one; SQLite commits one writer at a time, in id order.
LOOKBACK_IDS = {"postgresql": 20}
PAGE = 5000
SEEN = "event_log"  # cursor row: the event log's newest id at the last refresh


@dataclass(frozen=True)
class Schema:
    metadata: sa.MetaData
    steps: sa.Table
    totals: sa.Table
    lock: sa.Table
    cursors: sa.Table
    started: sa.Table


@cache
def schema() -> Schema:
    """The ledger's tables, built on first use: SQLAlchemy loads with the first step or sensor
    that reads the ledger, not with the code locations that import the budget rules."""
    import sqlalchemy as sa

    metadata = sa.MetaData()
    steps = sa.Table(
        "cost_ledger_steps",
        metadata,
        sa.Column("ledger", sa.String(36), primary_key=True),
        sa.Column("storage_id", sa.BigInteger, primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("asset_key", sa.String(1000), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_key", sa.String(1000), nullable=False),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("failed", sa.Boolean, nullable=False),
        sa.Index("cost_ledger_steps_tenant_month_ts", "ledger", "tenant", "month", "timestamp"),
    )
    totals = sa.Table(
        "cost_ledger_totals",
        metadata,
        sa.Column("ledger", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(200), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("steps", sa.BigInteger, nullable=False),
    )
    lock = sa.Table("cost_ledger_lock", metadata, sa.Column("id", sa.Integer, primary_key=True))
    cursors = sa.Table(
        "cost_ledger_cursors",
        metadata,
        sa.Column("ledger", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(64), primary_key=True),
        sa.Column("storage_id", sa.BigInteger, nullable=False),
    )
    started = sa.Table(
        "cost_ledger_started",
        metadata,
        sa.Column("ledger", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_key", sa.String(1000), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("asset_key", sa.String(1000), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("cpu", sa.Float, nullable=False),
        sa.Column("memory_gib", sa.Float, nullable=False),
        sa.Column("gpu", sa.Integer, nullable=False),
        # Null while the step may still be running or owes its bill; then when it was closed.
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(200), nullable=True),
        sa.Index("cost_ledger_started_open", "ledger", "closed_at"),
    )
    return Schema(metadata, steps, totals, lock, cursors, started)


@dataclass(frozen=True)
class BilledStep:
    storage_id: int
    tenant: str
    month: str
    timestamp: float
    asset_key: str
    run_id: str
    step_key: str
    usd: float
    failed: bool


def billable(record: dg.EventLogRecord) -> BilledStep | None:
    """The step this event bills, or None when its cost must not count (see `billed_event`)."""
    billed = billed_event(record)
    if billed is None:
        return None
    asset_event, failed = billed
    entry = record.event_log_entry
    return BilledStep(
        storage_id=record.storage_id,
        tenant=asset_event.asset_key.path[0],
        month=datetime.fromtimestamp(entry.timestamp, UTC).strftime("%Y-%m"),
        timestamp=entry.timestamp,
        asset_key=asset_event.asset_key.to_user_string(),
        run_id=entry.run_id,
        step_key=entry.step_key,
        usd=float(asset_event.metadata[COST_KEY].value),
        failed=failed,
    )


@cache
def _engine(url: str) -> sa.Engine:
    import sqlalchemy as sa

    t = schema()
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    with engine.begin() as conn:
        # Parallel steps on a new database would race between CREATE TABLE's existence check
        # and the table (on Postgres even with IF NOT EXISTS): there the first creates them
        # under an advisory lock and the others then find them.
        if conn.dialect.name == "postgresql":
            write_lock(conn)
            t.metadata.create_all(conn)
        else:
            for table in t.metadata.sorted_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    return engine


def ledger_engine() -> sa.Engine:
    return _engine(platform_db_url())


_LEDGER_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ledger_id(instance: dg.DagsterInstance, engine: sa.Engine | None = None) -> str:
    """This Dagster instance's ledger: storage ids only mean something within one event log.

    The id lives in the instance's key-value store; the first one is created under the ledger
    database's write lock, so concurrent first refreshes agree on it.
    """
    if instance in _LEDGER_IDS:
        return _LEDGER_IDS[instance]
    storage = instance.run_storage
    value = storage.get_cursor_values({LEDGER_ID_KEY}).get(LEDGER_ID_KEY)
    if value is None:
        with (engine or ledger_engine()).begin() as conn:
            write_lock(conn)
            value = storage.get_cursor_values({LEDGER_ID_KEY}).get(LEDGER_ID_KEY)
            if value is None:
                value = str(uuid.uuid4())
                storage.set_cursor_values({LEDGER_ID_KEY: value})
    _LEDGER_IDS[instance] = value
    return value


def record_start(
    instance: dg.DagsterInstance,
    run_id: str,
    step_key: str,
    tenant: str,
    asset_key: str,
    granted: ComputeResources,
    started_at: float,
    engine: sa.Engine | None = None,
) -> None:
    """The step `step_key` of `run_id` started, billing `tenant` for `granted`: the row the
    reconciler bills from if the step's process dies before it bills itself. A retried step
    starts again: its row is reopened with the new start."""
    t = schema()
    engine = engine or ledger_engine()
    values = {
        "tenant": tenant,
        "asset_key": asset_key,
        "started_at": started_at,
        "cpu": granted.cpu,
        "memory_gib": granted.memory_gib,
        "gpu": granted.gpu,
        "closed_at": None,
        "outcome": None,
    }
    ledger = ledger_id(instance, engine)
    with engine.begin() as conn:
        stmt = _insert(conn, t.started).values(
            ledger=ledger, run_id=run_id, step_key=step_key, **values
        )
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["ledger", "run_id", "step_key"], set_=values)
        )


def write_lock(conn: sa.Connection) -> None:
    """Hold the ledger database's write lock until the transaction ends."""
    import sqlalchemy as sa

    t = schema()
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("select pg_advisory_xact_lock(4242002)"))
    else:  # SQLite serialises writers: writing a row takes the database's write lock
        conn.execute(_insert(conn, t.lock).values(id=1).on_conflict_do_nothing())


def _insert(conn: sa.Connection, table: sa.Table):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def refresh(instance: dg.DagsterInstance, engine: sa.Engine | None = None) -> int:
    """Bill the steps recorded since the last refresh; returns how many rows were added."""
    import sqlalchemy as sa

    t = schema()
    engine = engine or ledger_engine()
    ledger = ledger_id(instance, engine)
    added = 0
    with engine.begin() as conn:
        known = dict(
            conn.execute(
                sa.select(t.cursors.c.event_type, t.cursors.c.storage_id).where(
                    t.cursors.c.ledger == ledger
                )
            ).all()
        )
        # One cheap query when nothing at all was recorded since the last refresh.
        latest = instance.event_log_storage.get_maximum_record_id() or 0
        if known.get(SEEN) == latest:
            return 0
        lookback = LOOKBACK_IDS.get(conn.dialect.name, 0)
        for event_type in COST_EVENTS:
            after = known.get(event_type.value)
            newest = after
            start = None if after is None else max(after - lookback, 0)
            while True:
                records = instance.event_log_storage.get_event_records(
                    dg.EventRecordsFilter(event_type=event_type, after_cursor=start),
                    limit=PAGE,
                    ascending=True,
                )
                added += _add(conn, ledger, [b for b in map(billable, records) if b is not None])
                if records:
                    newest = max(newest or 0, records[-1].storage_id)
                    start = records[-1].storage_id
                if len(records) < PAGE:
                    break
            if newest is not None and newest != after:
                _set_cursor(conn, ledger, event_type.value, newest)
        _set_cursor(conn, ledger, SEEN, latest)
    return added


def _set_cursor(conn: sa.Connection, ledger: str, name: str, storage_id: int) -> None:
    import sqlalchemy as sa

    t = schema()
    greatest = sa.func.max if conn.dialect.name == "sqlite" else sa.func.greatest
    stmt = _insert(conn, t.cursors).values(ledger=ledger, event_type=name, storage_id=storage_id)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["ledger", "event_type"],
            set_={"storage_id": greatest(t.cursors.c.storage_id, storage_id)},
        )
    )


def _add(conn: sa.Connection, ledger: str, billed: list[BilledStep]) -> int:
    """Insert the steps not yet in the ledger; add exactly those to the month totals."""
    t = schema()
    if not billed:
        return 0
    rows = [{"ledger": ledger, **b.__dict__} for b in billed]
    inserted = conn.execute(
        _insert(conn, t.steps)
        .on_conflict_do_nothing(index_elements=["ledger", "storage_id"])
        .returning(t.steps.c.tenant, t.steps.c.month, t.steps.c.usd),
        rows,
    ).all()
    sums: dict[tuple[str, str], list[float]] = {}
    for tenant, month, usd in inserted:
        acc = sums.setdefault((tenant, month), [0.0, 0])
        acc[0] += usd
        acc[1] += 1
    for (tenant, month), (usd, count) in sums.items():
        stmt = _insert(conn, t.totals).values(
            ledger=ledger, tenant=tenant, month=month, usd=usd, steps=count
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["ledger", "tenant", "month"],
                set_={"usd": t.totals.c.usd + usd, "steps": t.totals.c.steps + count},
            )
        )
    return len(inserted)


def month_to_date(
    instance: dg.DagsterInstance,
    tenant: str,
    month: str,
    before: float | None = None,
    engine: sa.Engine | None = None,
) -> float:
    """USD `tenant` spent in `month` (YYYY-MM), up to now or up to the timestamp `before`."""
    import sqlalchemy as sa

    t = schema()
    engine = engine or ledger_engine()
    refresh(instance, engine)
    ledger = ledger_id(instance)
    with engine.connect() as conn:
        if before is None:
            query = sa.select(t.totals.c.usd).where(
                t.totals.c.ledger == ledger, t.totals.c.tenant == tenant, t.totals.c.month == month
            )
        else:
            query = sa.select(sa.func.sum(t.steps.c.usd)).where(
                t.steps.c.ledger == ledger,
                t.steps.c.tenant == tenant,
                t.steps.c.month == month,
                t.steps.c.timestamp < before,
            )
        return float(conn.execute(query).scalar() or 0.0)
