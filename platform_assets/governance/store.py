"""The governance tables in the platform database: audit chain, approval requests, champions.

Every write happens in one serialized transaction (`BEGIN IMMEDIATE` on SQLite, a transaction
advisory lock on Postgres), so two approvals of one model cannot both link the audit chain to the
same previous hash or both move the champion. The champion row is also compare-and-set
(`WHERE version = :expected`) and the chain's `prev_hash` is unique, so a writer that bypassed the
lock would fail instead of forking the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
# One Postgres advisory lock key for all governance writes (low volume; simple beats clever).
PG_LOCK_KEY = 4_242_001


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 over the canonical JSON of a record's fields followed by the previous hash."""
    return hashlib.sha256((canonical_json(fields) + prev_hash).encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# The fields a hash covers, in the audit table's column order.
HASHED = (
    "seq",
    "ts",
    "actor",
    "action",
    "outcome",
    "tenant",
    "model",
    "version",
    "environment",
    "reason",
    "evidence",
)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    actor: str
    action: str
    outcome: str
    tenant: str
    model: str
    version: int | None
    environment: str
    reason: str
    evidence: dict[str, Any]
    prev_hash: str
    hash: str

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HASHED}


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}"


class GovernanceStore:
    """SQLAlchemy Core over the platform DB. `prefix` names the tables (tests use their own)."""

    def __init__(self, url: str, prefix: str = "gov_", schema: str | None = None):
        import sqlalchemy as sa

        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the platform ships psycopg2.
        for bare in ("postgresql://", "postgres://"):
            if url.startswith(bare):
                url = "postgresql+psycopg2://" + url.removeprefix(bare)
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
            self._sqlite_immediate(self.engine)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        md = sa.MetaData(schema=schema)
        self.audit = sa.Table(
            f"{prefix}audit",
            md,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("ts", sa.String(40), nullable=False),
            sa.Column("actor", sa.String(200), nullable=False),
            sa.Column("action", sa.String(40), nullable=False),
            sa.Column("outcome", sa.String(40), nullable=False),
            sa.Column("tenant", sa.String(100), nullable=False),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("version", sa.Integer, nullable=True),
            sa.Column("environment", sa.String(40), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("evidence", sa.Text, nullable=False),
            # Unique: two writers can never link to the same predecessor.
            sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("hash", sa.String(64), nullable=False),
        )
        self.requests = sa.Table(
            f"{prefix}requests",
            md,
            sa.Column("model", sa.String(200), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            sa.Column("environment", sa.String(40), primary_key=True),
            sa.Column("tenant", sa.String(100), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),  # pending|approved|rejected
            sa.Column("required", sa.Integer, nullable=False),
            sa.Column("roles", sa.Text, nullable=False),
            sa.Column("launched_by", sa.String(200), nullable=False),
            sa.Column("created_at", sa.String(40), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("evidence", sa.Text, nullable=False),
        )
        self.approvals = sa.Table(
            f"{prefix}approvals",
            md,
            sa.Column("model", sa.String(200), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            sa.Column("environment", sa.String(40), primary_key=True),
            sa.Column("actor", sa.String(200), primary_key=True),
            sa.Column("role", sa.String(40), nullable=False),
            sa.Column("ts", sa.String(40), nullable=False),
        )
        self.champions = sa.Table(
            f"{prefix}champions",
            md,
            sa.Column("model", sa.String(200), primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("previous", sa.Integer, nullable=True),
            sa.Column("updated_at", sa.String(40), nullable=False),
        )
        self.metadata = md
        md.create_all(self.engine)

    @staticmethod
    def _sqlite_immediate(engine) -> None:
        # pysqlite's own transaction handling starts transactions lazily and as DEFERRED, which
        # lets two writers read the same chain head. Take the write lock at BEGIN instead.
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A serialized write transaction; commits on exit, rolls back on error."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
            yield conn

    # --- audit chain -------------------------------------------------------------------------

    def append(
        self,
        conn,
        *,
        actor: str,
        action: str,
        outcome: str,
        tenant: str,
        model: str,
        version: int | None = None,
        environment: str = "",
        reason: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record inside `conn`'s transaction (which holds the write lock)."""
        import sqlalchemy as sa

        head = conn.execute(
            sa.select(self.audit.c.seq, self.audit.c.hash)
            .order_by(self.audit.c.seq.desc())
            .limit(1)
        ).first()
        seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
        fields = {
            "seq": seq,
            "ts": now_iso(),
            "actor": actor,
            "action": action,
            "outcome": outcome,
            "tenant": tenant,
            "model": model,
            "version": version,
            "environment": environment,
            "reason": reason,
            # Stored as canonical text so the hash is over exactly what is stored.
            "evidence": json.loads(canonical_json(evidence or {})),
        }
        digest = record_hash(fields, prev)
        row = {**fields, "evidence": canonical_json(fields["evidence"])}
        conn.execute(self.audit.insert().values(**row, prev_hash=prev, hash=digest))
        return AuditRecord(**fields, prev_hash=prev, hash=digest)

    def records(
        self, model: str | None = None, tenant: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        import sqlalchemy as sa

        query = sa.select(self.audit).order_by(self.audit.c.seq)
        if model:
            query = query.where(self.audit.c.model == model)
        if tenant:
            query = query.where(self.audit.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = [self._record(r) for r in rows]
        return out[-limit:] if limit else out

    @staticmethod
    def _record(row) -> AuditRecord:
        # A row whose evidence is no longer JSON has been edited; keep the text so verify can
        # name it instead of crashing.
        try:
            evidence = json.loads(row["evidence"])
        except json.JSONDecodeError:
            evidence = {"<unparseable>": row["evidence"]}
        return AuditRecord(**{**dict(row), "evidence": evidence})

    def verify(self) -> tuple[int, ChainProblem | None]:
        """Walk the whole chain; returns (records checked, first problem or None).

        A changed record fails its own hash; a removed or reordered one breaks the sequence or
        the link to its predecessor. Removing only the newest records leaves a valid shorter
        chain: anchor the head hash elsewhere (it is published on each model's AssetObservation)
        to detect that too.
        """
        prev, expected_seq, count = GENESIS, 1, 0
        for record in self.records():
            count += 1
            if record.seq != expected_seq:
                return count, ChainProblem(
                    record.seq,
                    f"sequence gap or reorder: expected record {expected_seq} here "
                    f"(record {expected_seq} was removed or moved)",
                )
            if record.prev_hash != prev:
                return count, ChainProblem(
                    record.seq,
                    "prev_hash does not match the hash of the record before it "
                    "(a record before it was removed, replaced or reordered)",
                )
            if record_hash(record.fields(), record.prev_hash) != record.hash:
                return count, ChainProblem(
                    record.seq, "content does not match its hash (the record was changed)"
                )
            prev, expected_seq = record.hash, expected_seq + 1
        return count, None

    # --- champions (compare-and-set) ---------------------------------------------------------

    def champion(self, conn, model: str) -> tuple[int, int | None] | None:
        import sqlalchemy as sa

        row = conn.execute(
            sa.select(self.champions.c.version, self.champions.c.previous).where(
                self.champions.c.model == model
            )
        ).first()
        return (row.version, row.previous) if row else None

    def set_champion(
        self, conn, model: str, new: int, expected: int | None, previous: int | None
    ) -> bool:
        """Move the champion from `expected` to `new`; False when someone else moved it first."""
        import sqlalchemy as sa

        if expected is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        self.champions.insert().values(
                            model=model, version=new, previous=previous, updated_at=now_iso()
                        )
                    )
            except sa.exc.IntegrityError:
                return False
            return True
        result = conn.execute(
            self.champions.update()
            .where(self.champions.c.model == model, self.champions.c.version == expected)
            .values(version=new, previous=previous, updated_at=now_iso())
        )
        return result.rowcount == 1

    # --- approval requests -------------------------------------------------------------------

    def request(self, conn, model: str, version: int, environment: str) -> dict | None:
        import sqlalchemy as sa

        t = self.requests
        row = (
            conn.execute(
                sa.select(t).where(
                    t.c.model == model, t.c.version == version, t.c.environment == environment
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def pending(self, tenant: str | None = None, environment: str | None = None) -> list[dict]:
        import sqlalchemy as sa

        t = self.requests
        query = sa.select(t).where(t.c.status == "pending").order_by(t.c.model, t.c.version)
        if tenant:
            query = query.where(t.c.tenant == tenant)
        if environment:
            query = query.where(t.c.environment == environment)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def approvers(self, conn, model: str, version: int, environment: str) -> list[str]:
        import sqlalchemy as sa

        t = self.approvals
        rows = conn.execute(
            sa.select(t.c.actor)
            .where(t.c.model == model, t.c.version == version, t.c.environment == environment)
            .order_by(t.c.ts)
        )
        return [r.actor for r in rows]

    def dispose(self) -> None:
        self.engine.dispose()
