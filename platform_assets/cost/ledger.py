"""Month-to-date spend per tenant, maintained incrementally from the Dagster event log.

`refresh` reads only the cost events recorded since its cursor (event storage id, per event type)
and inserts one row per billed step, keyed by the event's storage id, with the per-tenant-month
totals updated in the same transaction. Re-reading a few ids before the cursor (ids may commit out
of order) and concurrent refreshes are harmless: a row that exists is not inserted again, and
totals only grow by the rows actually inserted. A budget check is then a refresh of the few new
events plus one primary-key read, however many steps the month holds.

What counts is `rollup.billed_event`'s rule, the same as the showback's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from platform_assets.cost.rollup import COST_EVENTS, COST_KEY, billed_event

LEDGER_ID_KEY = "mlplat/cost/ledger_id"
LOOKBACK_IDS = 50  # ids below the cursor re-read: a transaction may commit an older id later
PAGE = 5000

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
cursors = sa.Table(
    "cost_ledger_cursors",
    metadata,
    sa.Column("ledger", sa.String(36), primary_key=True),
    sa.Column("event_type", sa.String(64), primary_key=True),
    sa.Column("storage_id", sa.BigInteger, nullable=False),
)


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
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def ledger_engine() -> sa.Engine:
    from platform_assets.execution.env import platform_db_url

    return _engine(platform_db_url())


def ledger_id(instance: dg.DagsterInstance) -> str:
    """This Dagster instance's ledger: storage ids only mean something within one event log."""
    storage = instance.run_storage
    value = storage.get_cursor_values({LEDGER_ID_KEY}).get(LEDGER_ID_KEY)
    if value is None:
        storage.set_cursor_values({LEDGER_ID_KEY: str(uuid.uuid4())})
        value = storage.get_cursor_values({LEDGER_ID_KEY})[LEDGER_ID_KEY]
    return value


def _insert(conn: sa.Connection, table: sa.Table):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def refresh(instance: dg.DagsterInstance, engine: sa.Engine | None = None) -> int:
    """Bill the steps recorded since the last refresh; returns how many rows were added."""
    engine = engine or ledger_engine()
    ledger = ledger_id(instance)
    added = 0
    with engine.begin() as conn:
        known = dict(
            conn.execute(
                sa.select(cursors.c.event_type, cursors.c.storage_id).where(
                    cursors.c.ledger == ledger
                )
            ).all()
        )
        for event_type in COST_EVENTS:
            after = known.get(event_type.value)
            newest = after
            start = None if after is None else max(after - LOOKBACK_IDS, 0)
            while True:
                records = instance.event_log_storage.get_event_records(
                    dg.EventRecordsFilter(event_type=event_type, after_cursor=start),
                    limit=PAGE,
                    ascending=True,
                )
                billed = [b for b in map(billable, records) if b is not None]
                added += _add(conn, ledger, billed)
                if records:
                    newest = max(newest or 0, records[-1].storage_id)
                    start = records[-1].storage_id
                if len(records) < PAGE:
                    break
            if newest is not None and newest != after:
                stmt = _insert(conn, cursors).values(
                    ledger=ledger, event_type=event_type.value, storage_id=newest
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["ledger", "event_type"],
                        set_={"storage_id": sa.func.max(cursors.c.storage_id, newest)}
                        if conn.dialect.name == "sqlite"
                        else {"storage_id": sa.func.greatest(cursors.c.storage_id, newest)},
                    )
                )
    return added


def _add(conn: sa.Connection, ledger: str, billed: list[BilledStep]) -> int:
    """Insert the steps not yet in the ledger; add exactly those to the month totals."""
    if not billed:
        return 0
    rows = [{"ledger": ledger, **b.__dict__} for b in billed]
    inserted = conn.execute(
        _insert(conn, steps)
        .on_conflict_do_nothing(index_elements=["ledger", "storage_id"])
        .returning(steps.c.tenant, steps.c.month, steps.c.usd),
        rows,
    ).all()
    sums: dict[tuple[str, str], list[float]] = {}
    for tenant, month, usd in inserted:
        acc = sums.setdefault((tenant, month), [0.0, 0])
        acc[0] += usd
        acc[1] += 1
    for (tenant, month), (usd, count) in sums.items():
        stmt = _insert(conn, totals).values(
            ledger=ledger, tenant=tenant, month=month, usd=usd, steps=count
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["ledger", "tenant", "month"],
                set_={"usd": totals.c.usd + usd, "steps": totals.c.steps + count},
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
    engine = engine or ledger_engine()
    refresh(instance, engine)
    ledger = ledger_id(instance)
    with engine.connect() as conn:
        if before is None:
            query = sa.select(totals.c.usd).where(
                totals.c.ledger == ledger, totals.c.tenant == tenant, totals.c.month == month
            )
        else:
            query = sa.select(sa.func.sum(steps.c.usd)).where(
                steps.c.ledger == ledger,
                steps.c.tenant == tenant,
                steps.c.month == month,
                steps.c.timestamp < before,
            )
        return float(conn.execute(query).scalar() or 0.0)
