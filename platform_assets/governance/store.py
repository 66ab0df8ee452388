"""The governance tables in the platform database: audit chains, approval requests, champions.

Each tenant has its own audit chain, HMAC-SHA256-linked under a key that lives outside the
database (`keys.py`), and each record also covers the state rows (champion, requests, approvals)
of its model as they were after the action, so an edit to state is as visible as an edit to a
record. Writes run in one transaction per tenant (a per-tenant advisory lock on Postgres,
`BEGIN IMMEDIATE` on SQLite): one tenant's approvals never wait on another's on Postgres. The
champion row is also compare-and-set and `(tenant, prev_hash)` is unique, so a writer that
bypassed the lock would fail instead of forking a chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from platform_assets.governance.keys import AuditKeys, audit_keys
from platform_assets.governance.migrations import upgrade

GENESIS = "0" * 64
STATE_TABLES = ("champions", "requests", "approvals")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def lock_key(tenant: str) -> int:
    """A stable signed 64-bit advisory lock key per tenant."""
    return int.from_bytes(
        hashlib.sha256(f"mlplat-gov:{tenant}".encode()).digest()[:8], "big", signed=True
    )


# The fields a record's HMAC covers.
HASHED = (
    "tenant",
    "seq",
    "ts",
    "actor",
    "identity",
    "action",
    "outcome",
    "model",
    "version",
    "environment",
    "reason",
    "evidence",
    "state",
    "key_id",
)


@dataclass(frozen=True)
class AuditRecord:
    tenant: str
    seq: int
    ts: str
    actor: str
    identity: str  # how the actor was established: oidc, proxy, platform, unverified
    action: str
    outcome: str
    model: str
    version: int | None
    environment: str
    reason: str
    evidence: dict[str, Any]
    state: dict[str, str]  # digest per state table of the model's rows after the action
    key_id: str
    prev_hash: str
    hash: str

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HASHED}

    @property
    def name(self) -> str:
        return f"{self.tenant}#{self.seq}"


@dataclass(frozen=True)
class Head:
    """A published chain head: the newest record of a tenant's chain, as seen at `where`."""

    tenant: str
    seq: int
    hash: str
    where: str


@dataclass(frozen=True)
class ChainProblem:
    tenant: str
    seq: int
    problem: str

    def __str__(self) -> str:
        if self.seq == 0:  # state no record covers
            return self.problem
        return f"record {self.tenant}#{self.seq}: {self.problem}"


@dataclass
class Verification:
    checked: int = 0
    chains: dict[str, int] = field(default_factory=dict)  # tenant -> records
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def first(self) -> ChainProblem | None:
        return self.problems[0] if self.problems else None


class StateTampered(RuntimeError):
    """The live state rows of a model are not what its newest audit record covers."""


def tables(md):
    import sqlalchemy as sa

    audit = sa.Table(
        "gov_audit",
        md,
        sa.Column("tenant", sa.String(100), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("identity", sa.String(20), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(20), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        # Two writers of one chain can never link to the same predecessor.
        sa.UniqueConstraint("tenant", "prev_hash", name="uq_gov_audit_link"),
    )
    requests = sa.Table(
        "gov_requests",
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
    approvals = sa.Table(
        "gov_approvals",
        md,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("environment", sa.String(40), primary_key=True),
        sa.Column("actor", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
    )
    champions = sa.Table(
        "gov_champions",
        md,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("previous", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    return audit, requests, approvals, champions


def _engine(url: str):
    import sqlalchemy as sa

    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the platform ships psycopg2.
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            url = "postgresql+psycopg2://" + url.removeprefix(bare)
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})
        _sqlite_immediate(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


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


class GovernanceStore:
    """SQLAlchemy Core over the platform DB; the schema is brought to head by Alembic on open."""

    def __init__(self, url: str, keys: AuditKeys | None = None, schema: str | None = None):
        import sqlalchemy as sa

        # Loaded on first use: reading state (champions for scoring) needs no audit key.
        self._keys = keys
        self._load_keys = audit_keys
        self.url = url
        self.engine = _engine(url)
        self.dialect = self.engine.dialect.name
        self.schema = schema
        upgrade(self.engine, lambda: self.keys, schema)
        md = sa.MetaData(schema=schema)
        self.audit, self.requests, self.approvals, self.champions = tables(md)
        self.metadata = md

    @property
    def keys(self) -> AuditKeys:
        if self._keys is None:
            self._keys = self._load_keys()
        return self._keys

    @keys.setter
    def keys(self, value: AuditKeys) -> None:
        self._keys = value

    def state_table(self, name: str):
        return {
            "champions": self.champions,
            "requests": self.requests,
            "approvals": self.approvals,
        }[name]

    @contextmanager
    def transaction(self, tenant: str) -> Iterator[Any]:
        """A write transaction serialized per tenant; commits on exit, rolls back on error."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(tenant)})
            yield conn

    # --- state covered by the chain ----------------------------------------------------------

    def state_of(self, conn, model: str) -> dict[str, str]:
        """A digest per state table of `model`'s rows, as the audit record covering them holds."""
        import sqlalchemy as sa

        out = {}
        for name in STATE_TABLES:
            t = self.state_table(name)
            pk = [c for c in t.columns if c.primary_key]
            rows = conn.execute(sa.select(t).where(t.c.model == model).order_by(*pk)).mappings()
            out[name] = hashlib.sha256(canonical_json([dict(r) for r in rows]).encode()).hexdigest()
        return out

    def all_state(self, conn) -> dict[str, dict[str, str]]:
        """`state_of` for every model that has state rows."""
        import sqlalchemy as sa

        models: set[str] = set()
        for name in STATE_TABLES:
            t = self.state_table(name)
            models |= {r.model for r in conn.execute(sa.select(t.c.model).distinct())}
        return {m: self.state_of(conn, m) for m in sorted(models)}

    def covered_state(self, conn, tenant: str, model: str) -> AuditRecord | None:
        """The newest audit record of `model`: what its state rows must match."""
        import sqlalchemy as sa

        a = self.audit
        row = (
            conn.execute(
                sa.select(a)
                .where(a.c.tenant == tenant, a.c.model == model)
                .order_by(a.c.seq.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return self._record(row) if row else None

    def check_state(self, conn, tenant: str, model: str) -> None:
        """Refuse to build on state rows that an audit record does not cover (edited state)."""
        record = self.covered_state(conn, tenant, model)
        live = self.state_of(conn, model)
        empty = self._empty_state()
        expected = record.state if record is not None else empty
        changed = [t for t in STATE_TABLES if live[t] != expected.get(t, empty[t])]
        if changed:
            covering = f"audit record {record.name}" if record else "no audit record"
            raise StateTampered(
                f"the {', '.join(changed)} rows of {model} are not what {covering} covers "
                "(state edited outside the platform); run `mlplat audit verify`"
            )

    @staticmethod
    def _empty_state() -> dict[str, str]:
        digest = hashlib.sha256(b"[]").hexdigest()
        return dict.fromkeys(STATE_TABLES, digest)

    # --- audit chains ------------------------------------------------------------------------

    def append(
        self,
        conn,
        *,
        tenant: str,
        actor: str,
        identity: str,
        action: str,
        outcome: str,
        model: str = "",
        version: int | None = None,
        environment: str = "",
        reason: str = "",
        evidence: dict[str, Any] | None = None,
        cover_state: bool = True,
    ) -> AuditRecord:
        """Append one record to `tenant`'s chain inside `conn`'s transaction (which holds the
        tenant's lock), covering `model`'s state rows as they are now."""
        import sqlalchemy as sa

        a = self.audit
        head = conn.execute(
            sa.select(a.c.seq, a.c.hash)
            .where(a.c.tenant == tenant)
            .order_by(a.c.seq.desc())
            .limit(1)
        ).first()
        seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
        fields = {
            "tenant": tenant,
            "seq": seq,
            "ts": now_iso(),
            "actor": actor,
            "identity": identity,
            "action": action,
            "outcome": outcome,
            "model": model,
            "version": version,
            "environment": environment,
            "reason": reason,
            # Stored as canonical text so the HMAC is over exactly what is stored.
            "evidence": json.loads(canonical_json(evidence or {})),
            "state": self.state_of(conn, model) if model and cover_state else {},
            "key_id": self.keys.current,
        }
        digest = self.keys.sign(canonical_json(fields) + prev)
        row = {
            **fields,
            "evidence": canonical_json(fields["evidence"]),
            "state": canonical_json(fields["state"]),
        }
        conn.execute(a.insert().values(**row, prev_hash=prev, hash=digest))
        return AuditRecord(**fields, prev_hash=prev, hash=digest)

    def records(
        self, model: str | None = None, tenant: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        """Records in chain order (by tenant, then sequence); `limit` keeps the newest."""
        import sqlalchemy as sa

        a = self.audit
        query = sa.select(a).order_by(a.c.tenant, a.c.seq)
        if model:
            query = query.where(a.c.model == model)
        if tenant:
            query = query.where(a.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = [self._record(r) for r in rows]
        if limit:
            out = sorted(out, key=lambda r: r.ts)[-limit:]
        return out

    def heads(self) -> dict[str, Head]:
        """The newest record of every chain, as the database holds it."""
        import sqlalchemy as sa

        a = self.audit
        top = sa.select(a.c.tenant, sa.func.max(a.c.seq).label("seq")).group_by(a.c.tenant)
        with self.engine.connect() as conn:
            out = {}
            for tenant, seq in conn.execute(top):
                digest = conn.execute(
                    sa.select(a.c.hash).where(a.c.tenant == tenant, a.c.seq == seq)
                ).scalar_one()
                out[tenant] = Head(tenant, seq, digest, "database")
        return out

    @staticmethod
    def _record(row) -> AuditRecord:
        # A row whose JSON no longer parses has been edited; keep the text so verify can name it
        # instead of crashing.
        values = dict(row)
        for name in ("evidence", "state"):
            try:
                values[name] = json.loads(row[name])
            except json.JSONDecodeError:
                values[name] = {"<unparseable>": row[name]}
        return AuditRecord(**values)

    def verify(self, published: Iterable[Head] = ()) -> Verification:
        """Check every chain and the state it covers; `published` are heads kept elsewhere.

        Per chain: sequence continuity (deleted or moved records), the link to the previous
        record, the HMAC under the key it names (edited records, chains recomputed without the
        key), the published head (truncation, deletion of everything, a chain recomputed with
        the key), and finally each model's live state rows against its newest record.
        """
        result = Verification()
        by_tenant: dict[str, list[AuditRecord]] = {}
        for record in self.records():
            by_tenant.setdefault(record.tenant, []).append(record)
        heads: dict[str, list[Head]] = {}
        for head in published:
            heads.setdefault(head.tenant, []).append(head)
        for tenant in sorted(set(by_tenant) | set(heads)):
            chain = by_tenant.get(tenant, [])
            result.checked += len(chain)
            result.chains[tenant] = len(chain)
            problem = self._verify_chain(tenant, chain)
            for head in sorted(heads.get(tenant, []), key=lambda h: -h.seq):
                problem = problem or self._verify_head(tenant, chain, head)
            if problem is not None:
                result.problems.append(problem)
        if not result.problems:
            result.problems += self._verify_state(by_tenant)
        return result

    def _verify_chain(self, tenant: str, chain: list[AuditRecord]) -> ChainProblem | None:
        prev, expected = GENESIS, 1
        for record in chain:
            if record.seq != expected:
                return ChainProblem(
                    tenant,
                    record.seq,
                    f"sequence gap or reorder: expected record {tenant}#{expected} here "
                    f"(record {tenant}#{expected} was deleted or moved)",
                )
            if record.prev_hash != prev:
                return ChainProblem(
                    tenant,
                    record.seq,
                    "prev_hash does not match the hash of the record before it "
                    "(a record before it was removed, replaced or reordered)",
                )
            if record.key_id not in self.keys.keys:
                return ChainProblem(
                    tenant,
                    record.seq,
                    f"signed with unknown key {record.key_id!r} (forged, or an old key is "
                    "missing from MLPLAT_AUDIT_KEY_FILE)",
                )
            digest = self.keys.sign(
                canonical_json(record.fields()) + record.prev_hash, record.key_id
            )
            if digest != record.hash:
                return ChainProblem(
                    tenant,
                    record.seq,
                    "content does not match its HMAC (the record was edited, or the chain was "
                    "recomputed without the audit key)",
                )
            prev, expected = record.hash, expected + 1
        return None

    @staticmethod
    def _verify_head(tenant: str, chain: list[AuditRecord], head: Head) -> ChainProblem | None:
        last = chain[-1].seq if chain else 0
        if not chain:
            return ChainProblem(
                tenant,
                head.seq,
                f"all records deleted: the head published in {head.where} is record "
                f"{tenant}#{head.seq} but the database holds no record of {tenant}",
            )
        if head.seq > last:
            return ChainProblem(
                tenant,
                last + 1,
                f"truncated: the head published in {head.where} is record {tenant}#{head.seq} "
                f"but the chain ends at {tenant}#{last} (newest records deleted)",
            )
        at = chain[head.seq - 1]
        if at.hash != head.hash:
            return ChainProblem(
                tenant,
                head.seq,
                f"differs from the head published in {head.where} ({head.hash[:16]}): the chain "
                "was rewritten up to here (recomputed or replaced records)",
            )
        return None

    def _verify_state(self, by_tenant: dict[str, list[AuditRecord]]) -> list[ChainProblem]:
        newest: dict[str, AuditRecord] = {}
        for chain in by_tenant.values():
            for record in chain:
                if record.model:
                    newest[record.model] = record
        with self.engine.connect() as conn:
            live = self.all_state(conn)
        empty = self._empty_state()
        problems = []
        for model in sorted(set(live) | set(newest)):
            record = newest.get(model)
            rows = live.get(model, empty)
            if record is None:
                problems.append(
                    ChainProblem(
                        model.partition(".")[0],
                        0,
                        f"state rows of {model} are not covered by any audit record "
                        "(state inserted outside the platform)",
                    )
                )
                continue
            changed = [t for t in STATE_TABLES if rows[t] != record.state.get(t, empty[t])]
            if changed:
                problems.append(
                    ChainProblem(
                        record.tenant,
                        record.seq,
                        f"edited state: the {', '.join(changed)} rows of {model} are not what "
                        "this record (the newest for the model) covers",
                    )
                )
        return problems

    # --- champions (compare-and-set) ---------------------------------------------------------

    def champion(self, conn, model: str) -> tuple[int, int | None] | None:
        import sqlalchemy as sa

        row = conn.execute(
            sa.select(self.champions.c.version, self.champions.c.previous).where(
                self.champions.c.model == model
            )
        ).first()
        return (row.version, row.previous) if row else None

    def champions_all(self) -> dict[str, int]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.champions.c.model, self.champions.c.version))
            return {r.model: r.version for r in rows}

    def champion_artifacts(self) -> dict[str, tuple[int, str | None]]:
        """Each champion's version and the artifact hash it was promoted on: the evidence of its
        approved production request, read from the platform's model materialization when the
        version was proposed (None for a champion promoted before artifacts were hashed). The
        request rows are state the audit chain covers, so an edited hash shows in `mlplat audit
        verify`."""
        return {
            model: (version, evidence.get("artifact_sha256"))
            for model, (version, evidence) in self.champion_evidence().items()
        }

    def champion_evidence(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Each champion's version and the evidence it was promoted on (its approved production
        request's; empty when there is none), e.g. its `training_set_version`."""
        import sqlalchemy as sa

        c, r = self.champions, self.requests
        query = sa.select(c.c.model, c.c.version, r.c.evidence).select_from(
            c.outerjoin(
                r,
                sa.and_(
                    r.c.model == c.c.model,
                    r.c.version == c.c.version,
                    r.c.environment == "production",
                    r.c.status == "approved",
                ),
            )
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            row.model: (row.version, json.loads(row.evidence) if row.evidence else {})
            for row in rows
        }

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

    def submitted_versions(self, models: list[str]) -> set[tuple[str, int]]:
        """(model, version) of every version already submitted, for a batch of models."""
        import sqlalchemy as sa

        t = self.requests
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.model, t.c.version).where(
                    t.c.environment == "staging", t.c.model.in_(models)
                )
            )
            return {(r.model, r.version) for r in rows}

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

    def snapshot(self, conn, model: str) -> dict[str, list[dict]]:
        """Every state row of `model`, to put back if a move cannot be completed."""
        import sqlalchemy as sa

        return {
            name: [
                dict(r)
                for r in conn.execute(
                    sa.select(self.state_table(name)).where(self.state_table(name).c.model == model)
                ).mappings()
            ]
            for name in STATE_TABLES
        }

    def restore(self, conn, model: str, snapshot: dict[str, list[dict]]) -> None:
        for name in STATE_TABLES:
            t = self.state_table(name)
            conn.execute(t.delete().where(t.c.model == model))
            if snapshot[name]:
                conn.execute(t.insert(), snapshot[name])

    def dispose(self) -> None:
        self.engine.dispose()
