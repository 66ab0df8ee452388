"""The audit chain: hash-linked, append-only, and `verify` names the first record tampered with;
concurrent writers serialize on SQLite and on Postgres."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from platform_assets.governance.rbac import Refused
from platform_assets.governance.store import GovernanceStore, record_hash
from platform_assets.governance.workflow import SENSOR_IDENTITY
from tests.governance.conftest import APPROVER, APPROVER2, MODEL


def fill(store: GovernanceStore, n: int = 4) -> None:
    for i in range(n):
        with store.transaction() as conn:
            store.append(
                conn,
                actor=f"user{i}@example.com",
                action="approve",
                outcome="approved",
                tenant="payments",
                model=MODEL,
                version=i + 1,
                reason=f"reason {i}",
                evidence={"metrics": {"auc": 0.8 + i / 100}, "checks": {"leakage": True}},
            )


@pytest.fixture
def store(tmp_path):
    s = GovernanceStore(f"sqlite:///{tmp_path / 'platform.db'}")
    yield s
    s.dispose()


def execute(store: GovernanceStore, sql: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql.replace("{t}", store.audit.name)))


def test_intact_chain_verifies_and_links_each_record_to_the_previous(store):
    fill(store)
    records = store.records()
    assert store.verify() == (4, None)
    assert records[0].prev_hash == "0" * 64
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.hash
        assert record_hash(after.fields(), after.prev_hash) == after.hash


def test_an_edited_record_is_named(store):
    fill(store)
    execute(store, "UPDATE {t} SET reason = 'nothing to see' WHERE seq = 2")
    count, problem = store.verify()
    assert problem is not None and problem.seq == 2
    assert "content does not match its hash (the record was changed)" in str(problem)


def test_an_edited_evidence_is_named(store):
    fill(store)
    execute(store, "UPDATE {t} SET evidence = replace(evidence, '0.81', '0.91') WHERE seq = 2")
    assert store.verify()[1].seq == 2


def test_a_removed_record_is_named(store):
    fill(store)
    execute(store, "DELETE FROM {t} WHERE seq = 3")
    problem = store.verify()[1]
    assert problem.seq == 4
    assert "expected record 3 here (record 3 was removed or moved)" in str(problem)


def test_reordered_records_are_named(store):
    fill(store)
    # Swap records 2 and 3 but keep the sequence numbers in order.
    execute(store, "UPDATE {t} SET seq = -2 WHERE seq = 2")
    execute(store, "UPDATE {t} SET seq = 2 WHERE seq = 3")
    execute(store, "UPDATE {t} SET seq = 3 WHERE seq = -2")
    problem = store.verify()[1]
    assert problem.seq == 2
    assert "prev_hash does not match" in str(problem)


def test_a_re_hashed_record_still_breaks_the_link_to_its_successor(store):
    """Re-computing the edited record's own hash does not help: the next record links to the
    old hash."""
    fill(store)
    record = store.records()[1]
    fields = {**record.fields(), "reason": "forged"}
    execute(
        store,
        f"UPDATE {{t}} SET reason = 'forged', hash = '{record_hash(fields, record.prev_hash)}' "
        "WHERE seq = 2",
    )
    assert store.verify()[1].seq == 3


def test_two_writers_cannot_link_to_the_same_previous_hash(store):
    fill(store, 1)
    head = store.records()[0]
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(
            store.audit.insert().values(
                **{**head.fields(), "seq": 99, "evidence": "{}"}, prev_hash="0" * 64, hash="x"
            )
        )


def test_champion_compare_and_set_refuses_a_stale_expectation(store):
    with store.transaction() as conn:
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
                with store.transaction() as conn:
                    store.append(
                        conn,
                        actor=f"w{i}",
                        action="approve",
                        outcome="approved",
                        tenant="payments",
                        model=MODEL,
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
    assert store.verify() == (writers * each, None)


def concurrent_approvals(sb) -> None:
    """Two approvers approve the same pending version at the same moment: one promotes, the
    other is refused, both attempts are in the trail, and the chain verifies."""
    gov = sb.governance()
    v1 = sb.register(0.30)
    gov.propose(MODEL, v1, SENSOR_IDENTITY)
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
    assert sb.store.verify()[1] is None
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
    assert sb.store.verify()[1] is None


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
    store = GovernanceStore(postgres_url, schema=schema)
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
    assert pg_store.verify()[1].seq == 3


@pytest.mark.services
def test_concurrent_approvals_and_promotions_postgres(gov_sandbox, pg_store):
    gov_sandbox.store = pg_store
    concurrent_approvals(gov_sandbox)


@pytest.mark.services
def test_concurrent_promotions_postgres(gov_sandbox, pg_store):
    gov_sandbox.store = pg_store
    concurrent_promotions(gov_sandbox)


def _append_in_process(url: str, writer: int, each: int) -> None:
    store = GovernanceStore(url)
    for j in range(each):
        with store.transaction() as conn:
            store.append(
                conn,
                actor=f"p{writer}",
                action="approve",
                outcome="approved",
                tenant="payments",
                model=MODEL,
                version=j,
            )
    store.dispose()


def test_concurrent_appends_from_processes_sqlite(tmp_path):
    """Separate processes contend on the SQLite file lock (BEGIN IMMEDIATE), not a Python lock."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    GovernanceStore(url).dispose()  # create the tables once, before the writers race
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_in_process, args=(url, i, 10)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = GovernanceStore(url)
    assert store.verify() == (40, None)
    store.dispose()
