"""The audit chains: HMAC-linked per tenant, covering state, and `verify` names the first record
tampered with, truncations and deletions against the published head, and edited state;
concurrent writers serialize on SQLite and on Postgres."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from platform_assets.governance.keys import AuditKeys
from platform_assets.governance.rbac import Refused
from platform_assets.governance.store import GovernanceStore, canonical_json
from tests.governance.conftest import APPROVER, APPROVER2, MODEL, SENSOR

KEYS = AuditKeys.from_secrets(["test audit key 0123456789"])


def fill(store: GovernanceStore, n: int = 4, tenant: str = "payments") -> None:
    for i in range(n):
        with store.transaction(tenant) as conn:
            store.append(
                conn,
                actor=f"user{i}@example.com",
                identity="unverified",
                action="approve",
                outcome="approved",
                tenant=tenant,
                model=f"{tenant}.fraud_detector",
                version=i + 1,
                reason=f"reason {i}",
                evidence={"metrics": {"auc": 0.8 + i / 100}, "checks": {"leakage": True}},
            )


@pytest.fixture
def store(tmp_path):
    s = GovernanceStore(f"sqlite:///{tmp_path / 'platform.db'}", KEYS)
    yield s
    s.dispose()


def execute(store: GovernanceStore, sql: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql.replace("{t}", store.audit.name)))


def problem(store: GovernanceStore, heads=()) -> str:
    found = store.verify(heads).first
    assert found is not None, "verify found nothing"
    return str(found)


def test_intact_chain_verifies_and_links_each_record_to_the_previous(store):
    fill(store)
    records = store.records()
    result = store.verify(store.heads().values())
    assert (result.checked, result.first) == (4, None)
    assert records[0].prev_hash == "0" * 64
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.hash
        assert KEYS.sign(canonical_json(after.fields()) + after.prev_hash) == after.hash


def test_an_edited_record_is_named(store):
    fill(store)
    execute(store, "UPDATE {t} SET reason = 'nothing to see' WHERE seq = 2")
    assert problem(store) == (
        "record payments#2: content does not match its HMAC (the record was edited, or the "
        "chain was recomputed without the audit key)"
    )


def test_an_edited_evidence_is_named(store):
    fill(store)
    execute(store, "UPDATE {t} SET evidence = replace(evidence, '0.81', '0.91') WHERE seq = 2")
    assert problem(store).startswith("record payments#2: content does not match its HMAC")


def test_a_removed_record_is_named(store):
    fill(store)
    execute(store, "DELETE FROM {t} WHERE seq = 3")
    assert problem(store) == (
        "record payments#4: sequence gap or reorder: expected record payments#3 here (record "
        "payments#3 was deleted or moved)"
    )


def test_reordered_records_are_named(store):
    fill(store)
    # Swap records 2 and 3 but keep the sequence numbers in order.
    execute(store, "UPDATE {t} SET seq = -2 WHERE seq = 2")
    execute(store, "UPDATE {t} SET seq = 2 WHERE seq = 3")
    execute(store, "UPDATE {t} SET seq = 3 WHERE seq = -2")
    assert problem(store).startswith("record payments#2: prev_hash does not match")


def test_a_re_hashed_record_still_breaks_the_link_to_its_successor(store):
    """Re-computing the edited record's own hash (with SHA-256, as the old chain used) fails its
    HMAC; the attacker does not hold the key."""
    import hashlib

    fill(store)
    record = store.records()[1]
    forged = hashlib.sha256((canonical_json(record.fields()) + record.prev_hash).encode())
    execute(
        store, f"UPDATE {{t}} SET reason = 'forged', hash = '{forged.hexdigest()}' WHERE seq = 2"
    )
    assert problem(store).startswith("record payments#2: content does not match its HMAC")


def test_two_writers_cannot_link_to_the_same_previous_hash(store):
    fill(store, 1)
    head = store.records()[0]
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(
            store.audit.insert().values(
                **{**head.fields(), "seq": 99, "evidence": "{}", "state": "{}"},
                prev_hash="0" * 64,
                hash="x",
            )
        )


def test_champion_compare_and_set_refuses_a_stale_expectation(store):
    with store.transaction("payments") as conn:
        assert store.set_champion(conn, MODEL, 1, None, None)
        assert not store.set_champion(conn, MODEL, 2, None, None)  # someone inserted first
        assert store.set_champion(conn, MODEL, 2, 1, 1)
        assert not store.set_champion(conn, MODEL, 3, 1, 1)  # expected 1, champion is 2
        assert store.champion(conn, MODEL) == (2, 1)


def concurrent_appends(store: GovernanceStore, writers: int = 8, each: int = 5) -> None:
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            for j in range(each):
                tenant = ("payments", "growth")[i % 2]
                with store.transaction(tenant) as conn:
                    store.append(
                        conn,
                        actor=f"w{i}",
                        identity="unverified",
                        action="approve",
                        outcome="approved",
                        tenant=tenant,
                        version=j,
                    )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = store.verify()
    assert (result.checked, result.first) == (writers * each, None)
    assert set(result.chains) == {"payments", "growth"}


def concurrent_approvals(sb) -> None:
    """Two approvers approve the same pending version at the same moment: one promotes, the
    other is refused, both attempts are in the trail, and the chain verifies."""
    gov = sb.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def approve(actor: str) -> None:
        barrier.wait()
        try:
            results[actor] = gov.approve(MODEL, v1, actor).message
        except Refused as exc:
            results[actor] = str(exc)

    threads = [threading.Thread(target=approve, args=(a,)) for a in (APPROVER, APPROVER2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted("is champion" in m for m in results.values()) == [False, True]
    loser = next(m for m in results.values() if "is champion" not in m)
    assert "no-pending-request" in loser
    attempts = [(r.actor, r.outcome) for r in sb.store.records() if r.action == "approve"]
    assert sorted(attempts) == sorted([(APPROVER, "approved"), (APPROVER2, "refused")]) or sorted(
        attempts
    ) == sorted([(APPROVER, "refused"), (APPROVER2, "approved")])
    assert [r.version for r in sb.store.records() if r.action == "promote"] == [v1]
    assert sb.store.verify().first is None
    champion = sb.mlflow.client().get_registered_model(MODEL).aliases["champion"]
    assert int(champion) == v1


def concurrent_promotions(sb) -> None:
    """Two better versions submitted at once with no approvals needed: exactly one champion,
    the other judged against it, both attempts recorded."""
    gov = sb.governance(sb.with_policy(production={"count": 0}))
    v1, v2 = sb.register(0.30), sb.register(0.30)
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def promote(version: int) -> None:
        barrier.wait()
        try:
            outcomes[version] = gov.propose(MODEL, version, APPROVER).message
        except Refused as exc:
            outcomes[version] = str(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (v1, v2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, m in outcomes.items() if "is champion" in m]
    assert len(winners) == 1
    loser = next(v for v in outcomes if v not in winners)
    assert "does not beat champion" in outcomes[loser]
    assert {r.version for r in sb.store.records() if r.action == "propose"} == {v1, v2}
    assert gov.champion(MODEL) == winners[0]
    assert sb.store.verify().first is None


def test_concurrent_appends_sqlite(store):
    concurrent_appends(store)


def test_concurrent_approvals_sqlite(gov_sandbox):
    concurrent_approvals(gov_sandbox)


def test_concurrent_promotions_sqlite(gov_sandbox):
    concurrent_promotions(gov_sandbox)


@pytest.fixture
def pg_store(postgres_url):
    schema = f"gov_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    store = GovernanceStore(postgres_url, KEYS, schema=schema)
    yield store
    store.dispose()
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.mark.services
def test_concurrent_appends_postgres(pg_store):
    concurrent_appends(pg_store)


@pytest.mark.services
def test_tampering_detected_postgres(pg_store):
    fill(pg_store)
    with pg_store.engine.begin() as conn:
        conn.execute(pg_store.audit.update().where(pg_store.audit.c.seq == 3).values(actor="eve"))
    assert pg_store.verify().first.seq == 3


@pytest.mark.services
def test_concurrent_approvals_and_promotions_postgres(gov_sandbox, pg_store):
    gov_sandbox.store = pg_store
    concurrent_approvals(gov_sandbox)


@pytest.mark.services
def test_concurrent_promotions_postgres(gov_sandbox, pg_store):
    gov_sandbox.store = pg_store
    concurrent_promotions(gov_sandbox)


def _append_in_process(url: str, writer: int, each: int) -> None:
    store = GovernanceStore(url, KEYS)
    for j in range(each):
        with store.transaction("payments") as conn:
            store.append(
                conn,
                actor=f"p{writer}",
                identity="unverified",
                action="approve",
                outcome="approved",
                tenant="payments",
                version=j,
            )
    store.dispose()


def test_concurrent_appends_from_processes_sqlite(tmp_path):
    """Separate processes contend on the SQLite file lock (BEGIN IMMEDIATE), not a Python lock."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    GovernanceStore(url, KEYS).dispose()  # create the tables once, before the writers race
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_in_process, args=(url, i, 10)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = GovernanceStore(url, KEYS)
    assert store.verify().checked == 40 and store.verify().first is None
    store.dispose()


# --- truncation, deletion, recomputed chains, edited state, against the published head ------


def test_deleting_the_newest_records_is_truncation_against_the_published_head(store):
    fill(store)
    published = list(store.heads().values())
    execute(store, "DELETE FROM {t} WHERE seq >= 3")
    assert store.verify().first is None  # on its own, a shorter chain is still a valid chain
    assert problem(store, published) == (
        "record payments#3: truncated: the head published in database is record payments#4 but "
        "the chain ends at payments#2 (newest records deleted)"
    )


def test_deleting_all_records_is_detected_against_the_published_head(store):
    fill(store)
    published = list(store.heads().values())
    execute(store, "DELETE FROM {t}")
    assert problem(store, published) == (
        "record payments#4: all records deleted: the head published in database is record "
        "payments#4 but the database holds no record of payments"
    )


def test_an_edit_followed_by_a_chain_recomputed_with_the_key_differs_from_the_published_head(
    store,
):
    """Even someone holding the audit key cannot rewrite history the head has seen."""
    fill(store)
    published = list(store.heads().values())
    records = store.records()
    prev = records[0].hash
    for record in records[1:]:
        fields = {**record.fields(), "reason": "rewritten"}
        digest = KEYS.sign(canonical_json(fields) + prev)
        execute(
            store,
            f"UPDATE {{t}} SET reason = 'rewritten', prev_hash = '{prev}', hash = '{digest}' "
            f"WHERE seq = {record.seq}",
        )
        prev = digest
    assert store.verify().first is None
    assert problem(store, published).startswith(
        "record payments#4: differs from the head published in database"
    )
    assert "the chain was rewritten up to here" in problem(store, published)


def test_one_tenant_chain_is_checked_independently_of_another(store):
    fill(store, 2, "payments")
    fill(store, 3, "growth")
    execute(store, "UPDATE {t} SET actor = 'eve' WHERE tenant = 'growth' AND seq = 2")
    result = store.verify()
    assert result.chains == {"growth": 3, "payments": 2}
    assert [str(p).split(":")[0] for p in result.problems] == ["record growth#2"]


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("UPDATE gov_champions SET version = 2", "champions"),
        ("UPDATE gov_requests SET status = 'pending'", "requests"),
        (
            "INSERT INTO gov_approvals VALUES ('payments.fraud_detector', 1, 'production', "
            "'eve@payments.example', 'approver', '2026-01-01')",
            "approvals",
        ),
    ],
)
def test_edited_state_is_named_and_blocks_further_actions(gov_sandbox, sql, table):
    from platform_assets.governance.store import StateTampered

    sb, gov = gov_sandbox, gov_sandbox.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    newest = sb.store.records()[-1]
    execute(sb.store, sql)
    assert problem(sb.store) == (
        f"record {newest.name}: edited state: the {table} rows of {MODEL} are not what this "
        "record (the newest for the model) covers"
    )
    with pytest.raises(StateTampered, match=f"the {table} rows of {MODEL} are not what audit"):
        gov.rollback(MODEL, APPROVER, "build on the edit")
    assert sb.store.records()[-1] == newest  # nothing was added on top of the edited state


def test_state_rows_no_record_covers_are_named(gov_sandbox):
    execute(
        gov_sandbox.store,
        "INSERT INTO gov_champions VALUES ('payments.fraud_detector', 9, NULL, '2026-01-01')",
    )
    assert problem(gov_sandbox.store) == (
        "state rows of payments.fraud_detector are not covered by any audit record "
        "(state inserted outside the platform)"
    )


def test_heads_published_in_dagster_and_the_head_file_catch_truncation(gov_sandbox, tmp_path):
    import dagster as dg

    from platform_assets.governance.heads import published_heads

    sb = gov_sandbox
    gov = sb.governance()
    gov.head_file = tmp_path / "heads.jsonl"
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    keys = [dg.AssetKey(["payments", "models", "fraud_detector"])]
    heads = published_heads(sb.instance, keys, gov.head_file)
    assert {h.where for h in heads} == {"the Dagster event log", f"the head file {gov.head_file}"}
    assert {h.seq for h in heads} == {len(sb.store.records())}
    assert sb.store.verify(heads).first is None
    execute(sb.store, f"DELETE FROM {{t}} WHERE seq = {len(sb.store.records())}")
    assert problem(sb.store, heads).startswith(
        f"record payments#{len(sb.store.records()) + 1}: truncated: the head published in the "
        "Dagster event log is record"
    )


def test_rotating_the_key_keeps_old_records_verifiable(tmp_path):
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    old = GovernanceStore(url, KEYS)
    fill(old, 2)
    rotated = AuditKeys.from_secrets(["the new audit key 987654321", "test audit key 0123456789"])
    new = GovernanceStore(url, rotated)
    fill(new, 1)
    assert new.verify().first is None
    assert [r.key_id for r in new.records()] == [KEYS.current, KEYS.current, rotated.current]
    # Dropping the old key from the file makes its records unverifiable, naming the key.
    only_new = GovernanceStore(url, AuditKeys.from_secrets(["the new audit key 987654321"]))
    assert str(only_new.verify().first) == (
        f"record payments#1: signed with unknown key {KEYS.current!r} (forged, or an old key is "
        "missing from MLPLAT_AUDIT_KEY_FILE)"
    )
    for s in (old, new, only_new):
        s.dispose()


def test_a_deleted_tenant_chain_is_checked_against_its_heads_published_in_dagster(
    cli_sandbox, tmp_path, monkeypatch
):
    """A tenant's folder removed, then its chain and state rows deleted: verification still finds
    the tenant from the heads Dagster holds and names the deletion."""
    from platform_assets.governance import service

    sb = cli_sandbox
    gov = sb.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR)
    gov.approve(MODEL, v1, APPROVER)
    published = len(sb.store.records())
    assert service.verification().first is None
    # The folder is gone: the defs root now holds no tenant at all.
    empty = tmp_path / "defs"
    empty.mkdir()
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(empty))
    execute(sb.store, "DELETE FROM {t} WHERE tenant = 'payments'")
    for table in ("gov_champions", "gov_requests", "gov_approvals"):
        execute(sb.store, f"DELETE FROM {table} WHERE model LIKE 'payments.%'")
    result = service.verification()
    assert result.chains == {"payments": 0}
    assert str(result.first) == (
        f"record payments#{published}: all records deleted: the head published in the Dagster "
        f"event log is record payments#{published} but the database holds no record of payments"
    )
