"""Stores the platform creates on first use, opened by parallel steps at once on a fresh database.

The multiprocess executor starts a run's steps as separate processes at the same moment, so on a
fresh deployment several of them create the same store together (`make demo` failed one time in
three with `table data_sources already exists`). Each round here starts that many processes on
a brand-new SQLite file or Postgres schema, releases them together through a barrier, and
requires every process to succeed and the store to hold what each of them wrote.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from platform_assets.cost.ledger import ledger_engine, schema
from platform_assets.features.feast_objects import feature_view
from platform_assets.governance.keys import AuditKeys, audit_keys, key_id
from platform_assets.governance.store import GovernanceStore
from platform_assets.resources.feature_store import FeastResource, apply
from platform_assets.resources.first_use import creation_lock
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.tenancy.specs import FeatureSetSpec

# The old Feast code failed 17 of 20 rounds on SQLite and 19 of 20 on Postgres, MLflow without
# its lock 20 of 20: ten rounds catch a regression and keep the suite's time down.
ROUNDS = 10
PROCESSES = 4
TENANT = "rides"
KEYS = AuditKeys.from_secrets(["first use test key 0123456789"])


def view_spec(i: int) -> FeatureSetSpec:
    return FeatureSetSpec.model_validate(
        {
            "name": f"view_{i}",
            "description": f"Feature set {i} of the tenant",
            "entity": {"name": "rider", "join_key": "rider_id", "description": "A rider"},
            "sources": ["trips"],
            "sql": "select 1",
            "features": {"trips_7d": "float64"},
        }
    )


# --- what one step does to each store the first time, and what the store must hold after ---


def feast_step(where: str, url: str | None, i: int) -> None:
    """A feature-set step: open the tenant's store and apply its own view (one shared entity)."""
    store = FeastResource(root=where, registry_url=url).store(TENANT)
    entity, view = feature_view(TENANT, "team@example.com", view_spec(i), f"{where}/v{i}.parquet")
    apply(store, [entity, view])


def feast_holds(where: str, url: str | None) -> list[str]:
    store = FeastResource(root=where, registry_url=url).store(TENANT)
    return sorted(v.name for v in store.list_feature_views())


def mlflow_resource(where: str) -> MlflowResource:
    return MlflowResource(
        tracking_uri=f"sqlite:///{where}/mlflow/mlflow.db", artifact_root=f"{where}/artifacts"
    )


def mlflow_step(where: str, url: str | None, i: int) -> None:
    """A model step: the tenant's experiment (shared by all) and its own registered model."""
    mlflow = mlflow_resource(where)
    mlflow.ensure_experiment(f"{TENANT}/models")
    mlflow.client().create_registered_model(mlflow.registered_name(TENANT, f"model_{i}"))


def mlflow_holds(where: str, url: str | None) -> list[str]:
    client = mlflow_resource(where).client()
    assert client.get_experiment_by_name(f"{TENANT}/models") is not None
    return sorted(m.name.split(".")[1] for m in client.search_registered_models())


def ledger_step(where: str, url: str | None, i: int) -> None:
    with mock.patch.dict(os.environ, {"MLPLAT_DB_URL": url or f"sqlite:///{where}/platform.db"}):
        engine = ledger_engine()
    with engine.connect() as conn:
        conn.execute(sa.select(sa.func.count()).select_from(schema().steps)).scalar_one()


def ledger_holds(where: str, url: str | None) -> list[str]:
    engine = sa.create_engine(url or f"sqlite:///{where}/platform.db")
    names = sa.inspect(engine).get_table_names()
    engine.dispose()
    return sorted(n for n in names if n.startswith("cost_"))


def governance_step(where: str, url: str | None, i: int) -> None:
    store = GovernanceStore(url or f"sqlite:///{where}/platform.db", KEYS)
    with store.transaction(TENANT) as conn:
        store.append(
            conn, actor=f"step{i}@example.com", identity="unverified", action="propose",
            outcome="ok", tenant=TENANT, model=f"{TENANT}.model_{i}",
        )  # fmt: skip
    store.dispose()


def governance_holds(where: str, url: str | None) -> list[str]:
    store = GovernanceStore(url or f"sqlite:///{where}/platform.db", KEYS)
    try:
        assert store.verify().problems == []
        return sorted(r.model.split(".")[1] for r in store.records())
    finally:
        store.dispose()


def audit_key_step(where: str, url: str | None, i: int) -> None:
    """Any governance call on the embedded deployment: the local audit key, made on first use."""
    env = {"MLPLAT_DATA": where, "MLPLAT_ENV": "local", "MLPLAT_AUDIT_KEY": ""}
    with mock.patch.dict(os.environ, env):
        os.environ.pop("MLPLAT_AUDIT_KEY_FILE", None)
        Path(where, f"key-{i}").write_text(audit_keys().current)


def audit_key_holds(where: str, url: str | None) -> list[str]:
    used = {Path(where, f"key-{i}").read_text() for i in range(PROCESSES)}
    on_disk = key_id(Path(where, "secrets", "audit.key").read_text().strip().encode())
    return ["the key on disk"] if used == {on_disk} else sorted(used)


STORES: dict[str, tuple[Callable, Callable, list[str]]] = {
    "feast": (feast_step, feast_holds, [f"view_{i}" for i in range(PROCESSES)]),
    "mlflow": (mlflow_step, mlflow_holds, [f"model_{i}" for i in range(PROCESSES)]),
    "ledger": (ledger_step, ledger_holds, sorted(schema().metadata.tables)),
    "governance": (governance_step, governance_holds, [f"model_{i}" for i in range(PROCESSES)]),
    "audit key": (audit_key_step, audit_key_holds, ["the key on disk"]),
}


# --- the race ---------------------------------------------------------------------------------


def _step(step: Callable, barrier, where: str, url: str | None, i: int, errors) -> None:
    try:
        barrier.wait(timeout=60)
        step(where, url, i)
    except BaseException:  # reported to the parent, which fails the round with it
        errors.put(f"process {i}: {traceback.format_exc(limit=-4)}")
        raise SystemExit(1) from None


def race(store: str, rounds: Iterator[tuple[str, str | None]], scratch: Path) -> list[str]:
    """Run `store`'s first use in PROCESSES processes at once, once per (folder, URL) of
    `rounds`; returns one line per failed round."""
    step, holds, expected = STORES[store]
    # Forked after one step here, on a SQLite store of its own: the libraries (and what they
    # import lazily) are loaded once, so the processes leave the barrier together and race on
    # the store, not on import times.
    scratch.mkdir()
    step(str(scratch), None, 0)
    ctx = multiprocessing.get_context("fork")
    failures = []
    for n, (where, url) in enumerate(rounds):
        barrier, errors = ctx.Barrier(PROCESSES), ctx.SimpleQueue()
        procs = [
            ctx.Process(target=_step, args=(step, barrier, where, url, i, errors))
            for i in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(300)
        problems = []
        while not errors.empty():
            problems.append(errors.get())
        codes = [proc.exitcode for proc in procs]
        if not problems and codes != [0] * PROCESSES:
            problems.append(f"exit codes {codes}")
        if not problems and (held := holds(where, url)) != expected:
            problems.append(f"the store holds {held}, not {expected}")
        if problems:
            failures.append(f"round {n}: " + "\n".join(problems))
    return failures


def sqlite_rounds(tmp_path: Path) -> Iterator[tuple[str, None]]:
    for n in range(ROUNDS):
        where = tmp_path / f"round{n}"
        where.mkdir()
        yield str(where), None


@pytest.fixture
def postgres_rounds(postgres_url, tmp_path):
    """A new schema per round on the test server (each dropped after): the store's URL puts it
    first on the search path, so every round starts with no tables."""
    admin = sa.create_engine(postgres_url)
    schemas = [f"first_use_{uuid.uuid4().hex[:12]}" for _ in range(ROUNDS)]

    def rounds() -> Iterator[tuple[str, str]]:
        for n, schema in enumerate(schemas):
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            where = tmp_path / f"round{n}"
            where.mkdir()
            url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
            yield str(where), url.render_as_string(hide_password=False)

    yield rounds()
    with admin.begin() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["feast", "mlflow", "ledger", "governance", "audit key"])
def test_parallel_first_use_on_fresh_sqlite(store, tmp_path):
    failures = race(store, sqlite_rounds(tmp_path), tmp_path / "warm")
    assert failures == [], f"{len(failures)} of {ROUNDS} rounds failed:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize("store", ["feast", "ledger", "governance"])
def test_parallel_first_use_on_fresh_postgres(store, postgres_rounds, tmp_path):
    """MLflow is not here: on Postgres deployments steps talk to its tracking server, which
    creates its store once when it starts."""
    failures = race(store, postgres_rounds, tmp_path / "warm")
    assert failures == [], f"{len(failures)} of {ROUNDS} rounds failed:\n" + "\n".join(failures)


def test_a_database_the_lock_cannot_serve_is_refused_by_name():
    with pytest.raises(ValueError) as raised, creation_lock("mysql://feast:s3cret@db/feast", "x"):
        pass
    assert str(raised.value) == (
        "mysql://feast:***@db/feast: cannot create x safely on 'mysql'; use a sqlite or "
        "postgresql URL"
    )


def test_the_creation_lock_excludes_other_processes_on_sqlite(tmp_path):
    holds_off_others(f"sqlite:///{tmp_path / 'store.db'}", "x")


@pytest.mark.services
def test_the_creation_lock_excludes_other_processes_on_postgres(postgres_url):
    holds_off_others(postgres_url, f"test lock {uuid.uuid4()}")


def holds_off_others(url: str, name: str) -> None:
    """While one process holds the lock, another's attempt waits for it."""
    ctx = multiprocessing.get_context("fork")
    held, attempted = ctx.Event(), ctx.Event()
    order = ctx.SimpleQueue()

    def holder() -> None:
        with creation_lock(url, name):
            held.set()
            attempted.wait(30)
            time.sleep(0.5)
            order.put("holder done")

    def waiter() -> None:
        held.wait(30)
        attempted.set()
        with creation_lock(url, name):
            order.put("waiter in")

    procs = [ctx.Process(target=holder), ctx.Process(target=waiter)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [order.get(), order.get()] == ["holder done", "waiter in"]
