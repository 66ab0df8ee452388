"""Alembic migrations: a platform database made by the previous release (one global SHA-256
chain, no version table) upgrades in place, keeping its records and state."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import sqlalchemy as sa

from platform_assets.governance.keys import AuditKeys
from platform_assets.governance.migrations import VERSION_TABLE, upgrade
from platform_assets.governance.store import GENESIS, GovernanceStore, _engine, canonical_json

KEYS = AuditKeys.from_secrets(["migration test key 0123456789"])
OLD_FIELDS = (
    "seq", "ts", "actor", "action", "outcome", "tenant", "model", "version", "environment",
    "reason", "evidence",
)  # fmt: skip


def previous_release_db(url: str, schema: str | None = None, break_at: int | None = None) -> None:
    """What the previous release left: its tables (created without Alembic), a chain of three
    records over two tenants hashed as it hashed them, a champion and a request."""
    engine = _engine(url)
    upgrade(engine, KEYS, schema, revision="0001")
    md = sa.MetaData(schema=schema)
    md.reflect(engine)
    name = f"{schema}.{{}}" if schema else "{}"
    audit = md.tables[name.format("gov_audit")]
    rows, prev = [], GENESIS
    for seq, (tenant, action) in enumerate(
        [("payments", "propose"), ("growth", "propose"), ("payments", "promote")], start=1
    ):
        fields = {
            "seq": seq,
            "ts": f"2026-11-0{seq}T00:00:00+00:00",
            "actor": "paul@payments.example" if tenant == "payments" else "grace@growth.example",
            "action": action,
            "outcome": "accepted",
            "tenant": tenant,
            "model": f"{tenant}.m",
            "version": 1,
            "environment": "production",
            "reason": "r",
            "evidence": {"metrics": {"roc_auc": 0.8}},
        }
        digest = hashlib.sha256((canonical_json(fields) + prev).encode()).hexdigest()
        rows.append({**fields, "evidence": canonical_json(fields["evidence"]), "prev_hash": prev,
                     "hash": digest})  # fmt: skip
        prev = digest
    if break_at:
        rows[break_at - 1]["reason"] = "edited before the upgrade"
    with engine.begin() as conn:
        conn.execute(audit.insert(), rows)
        conn.execute(
            md.tables[name.format("gov_champions")]
            .insert()
            .values(model="payments.m", version=1, previous=None, updated_at="2026-11-03")
        )
        conn.execute(
            md.tables[name.format("gov_requests")].insert().values(
                model="payments.m", version=1, environment="production", tenant="payments",
                status="approved", required=1, roles=json.dumps(["approver"]),
                launched_by="lena@payments.example", created_at="2026-11-01", reason="r",
                evidence="{}",
            )
        )  # fmt: skip
        md.tables[name.format(VERSION_TABLE)].drop(conn)  # the release had none
    engine.dispose()


def check_upgraded(store: GovernanceStore) -> None:
    result = store.verify(store.heads().values())
    assert result.first is None, result.first
    assert result.chains == {"growth": 1, "payments": 3}
    records = store.records()
    legacy = [r.evidence["legacy"]["seq"] for r in records if "legacy" in r.evidence]
    assert sorted(legacy) == [1, 2, 3]
    payments = store.records(tenant="payments")
    assert [(r.action, r.identity) for r in payments] == [
        ("propose", "unverified"),
        ("promote", "unverified"),
        ("schema_upgrade", "platform"),
    ]
    assert payments[-1].state and payments[-1].model == "payments.m"
    with store.engine.connect() as conn:
        assert store.champion(conn, "payments.m") == (1, None)
    # New actions append to the upgraded chains.
    with store.transaction("payments") as conn:
        store.append(conn, tenant="payments", actor="a", identity="oidc", action="x", outcome="y")
    assert store.verify().first is None and store.heads()["payments"].seq == 4


def test_a_database_of_the_previous_release_upgrades_in_place(tmp_path):
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    previous_release_db(url)
    store = GovernanceStore(url, KEYS)
    check_upgraded(store)
    store.dispose()
    # Opening again is a no-op at head.
    again = GovernanceStore(url, KEYS)
    assert again.verify().first is None
    with again.engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0002"
    again.dispose()


def test_an_upgrade_refuses_to_re_sign_a_broken_chain(tmp_path):
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    previous_release_db(url, break_at=2)
    with pytest.raises(RuntimeError) as exc:
        GovernanceStore(url, KEYS)
    assert str(exc.value).startswith(
        "cannot upgrade the platform database: the existing audit chain is broken at record 2"
    )
    # Nothing was changed: the old table and its rows are still there.
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM gov_audit")).scalar() == 3
    engine.dispose()


@pytest.mark.services
def test_upgrade_on_postgres(postgres_url):
    schema = f"gov_mig_{uuid.uuid4().hex[:10]}"
    engine = _engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        previous_release_db(postgres_url, schema)
        store = GovernanceStore(postgres_url, KEYS, schema=schema)
        check_upgraded(store)
        store.dispose()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def fresh_postgres_db(postgres_url):
    """A new, empty database on the test server (dropped after): nothing created yet."""
    from sqlalchemy.engine import make_url

    name = f"mlplat_gov_race_{uuid.uuid4().hex[:10]}"
    admin = _engine(postgres_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.services
def test_parallel_first_use_on_a_fresh_postgres_database(fresh_postgres_db):
    """Steps that open the store at once on a new database: one creates the tables (Alembic,
    under the advisory lock), the others find them at head, and every one of them works."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from alembic.script import ScriptDirectory

    from platform_assets.governance.migrations import config

    creators = 4
    start = threading.Barrier(creators)

    def open_and_append(i: int) -> int:
        start.wait()  # all connect and migrate at the same moment
        store = GovernanceStore(fresh_postgres_db, KEYS)
        try:
            with store.transaction("payments") as conn:
                store.append(
                    conn, actor=f"creator{i}@example.com", identity="unverified",
                    action="propose", outcome="ok", tenant="payments",
                    model="payments.fraud_detector",
                )  # fmt: skip
            return len(store.records())
        finally:
            store.dispose()

    with ThreadPoolExecutor(creators) as pool:
        list(pool.map(open_and_append, range(creators)))  # raises the first creator's error

    head = ScriptDirectory.from_config(config(None, KEYS)).get_current_head()
    engine = _engine(fresh_postgres_db)
    with engine.connect() as conn:
        versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    engine.dispose()
    assert versions == [(head,)]
    store = GovernanceStore(fresh_postgres_db, KEYS)
    assert [r.seq for r in store.records()] == list(range(1, creators + 1))
    verification = store.verify()
    assert verification.problems == [] and verification.chains == {"payments": creators}
    store.dispose()
