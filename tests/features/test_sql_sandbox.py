"""Team SQL runs sandboxed: it sees its declared sources and nothing else (issue #10, item 3).

Each attack from the issue gets its own test: the feature set's SQL is refused with a message
that names the feature set and its file, and no other tenant's data is read or written.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from platform_assets.features.component import compute_feature_table
from platform_assets.features.sandbox import sandbox
from platform_assets.tenancy.catalog import PlatformConfigError, load_all
from tests.platform_sandbox import sandbox as defs_sandbox

RIDEHAIL = load_all()["ridehail"]
SPEC = RIDEHAIL.feature_sets["driver_stats"]
WHERE = str(RIDEHAIL.file_of("feature_set", "driver_stats"))
DISABLED = "file, network, extension and configuration access is disabled in the sandbox"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """A lake holding payments' card data and feature file, next to ridehail's trips."""
    root = tmp_path / "lake"
    for rel, table in {
        "payments/sources/transactions.parquet": pa.table({"card_id": ["c1"], "pan": ["4111"]}),
        "payments/features/card_activity.parquet": pa.table({"card_id": ["c1"], "n": [3]}),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / rel)
    return root


def _trips() -> pa.Table:
    return pa.table(
        {
            "driver_id": ["d1"],
            "event_ts": pa.array([0], pa.timestamp("us")),
            "rating": [4.5],
            "cancelled": [False],
            "ingested_at": pa.array([0], pa.timestamp("us")),
        }
    )


def _refusal(sql: str) -> str:
    spec = SPEC.model_copy(update={"sql": sql})
    with pytest.raises(PlatformConfigError) as excinfo:
        compute_feature_table(spec, {"trips": _trips()}, WHERE, "ridehail")
    message = str(excinfo.value)
    assert message.startswith(f"{WHERE}: attributes.sql: feature set 'ridehail/driver_stats': ")
    return message


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_declared_sources_are_the_only_tables():
    df = compute_feature_table(SPEC, {"trips": _trips()}, WHERE, "ridehail")
    assert list(df["driver_id"]) == ["d1"] and df["trips_7d"].tolist() == [1]


def test_reading_another_tenants_parquet_is_refused(lake):
    target = lake / "payments" / "sources" / "transactions.parquet"
    message = _refusal(f"select * from read_parquet('{target}')")
    assert DISABLED in message and f'Cannot access file "{target}"' in message


def test_reading_a_file_by_its_name_as_a_table_is_refused(lake):
    target = lake / "payments" / "sources" / "transactions.parquet"
    message = _refusal(f"select * from '{target}'")
    assert DISABLED in message


def test_copy_over_another_tenants_feature_file_is_refused(lake):
    target = lake / "payments" / "features" / "card_activity.parquet"
    before = _digest(target)
    message = _refusal(f"copy (select * from trips) to '{target}' (format parquet)")
    assert "the SQL must be a single SELECT over the declared sources" in message
    assert "COPY statements are not allowed (the platform writes all outputs)" in message
    assert _digest(target) == before


def test_a_second_statement_is_refused(lake):
    target = lake / "payments" / "features" / "card_activity.parquet"
    message = _refusal(f"select * from trips; copy trips to '{target}'")
    assert "the SQL must be exactly one SELECT statement (found 2)" in message


def test_attach_is_refused(tmp_path):
    message = _refusal(f"attach '{tmp_path / 'other.duckdb'}' as other")
    assert "ATTACH statements are not allowed" in message
    assert not (tmp_path / "other.duckdb").exists()


def test_set_is_refused():
    message = _refusal("set enable_external_access = true")
    assert "SET statements are not allowed" in message


@pytest.mark.parametrize("sql", ["install httpfs", "load httpfs"])
def test_install_and_load_are_refused(sql):
    assert "LOAD statements are not allowed" in _refusal(sql)


def test_etc_passwd_is_refused():
    message = _refusal("select * from read_text('/etc/passwd')")
    assert DISABLED in message and 'Cannot access file "/etc/passwd"' in message


def test_proc_self_environ_is_refused():
    message = _refusal("select content as driver_id from read_text('/proc/self/environ')")
    assert DISABLED in message and 'Cannot access file "/proc/self/environ"' in message


def test_the_platform_database_is_refused(tmp_path):
    db = tmp_path / "dagster_home" / "storage" / "runs.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.execute("create table runs (run_id text)")
    assert DISABLED in _refusal(f"select * from read_blob('{db}')")
    # The sqlite scanner is an extension; nothing installs or loads one in the sandbox.
    assert "sqlite_scan" in _refusal(f"select * from sqlite_scan('{db}', 'runs')")


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("copy trips to '{path}'", "file system operations are disabled"),
        ("attach '{path}' as x", "file system operations are disabled"),
        ("export database '{path}'", "file system operations are disabled"),
        ("load httpfs", "Loading external extensions is disabled"),
        ("set enable_external_access = true", "the configuration has been locked"),
        ("set lock_configuration = false", "the configuration has been locked"),
        ("reset autoload_known_extensions", "the configuration has been locked"),
    ],
)
def test_the_connection_itself_is_locked(tmp_path, statement, refusal):
    """Beneath the single-SELECT rule, DuckDB's own lock refuses every way out."""
    con = sandbox({"trips": _trips()})
    with pytest.raises(duckdb.Error, match=refusal):
        con.execute(statement.format(path=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_python_objects_are_not_visible_by_name():
    secret = pa.table({"password": ["hunter2"]})  # noqa: F841 (what a replacement scan would find)
    con = sandbox({"trips": _trips()})
    with pytest.raises(duckdb.CatalogException, match="secret"):
        con.sql("select * from secret")


@pytest.mark.materialize
def test_a_materialized_feature_set_cannot_copy_another_tenants_data(
    monkeypatch, platform_home, instance
):
    lake = platform_home / "data" / "lake"
    card_data = lake / "payments" / "sources" / "transactions.parquet"
    card_data.parent.mkdir(parents=True)
    pq.write_table(pa.table({"card_id": ["c1"], "pan": ["4111111111111111"]}), card_data)
    with defs_sandbox(monkeypatch) as (root, build):
        path = root / "ridehail" / "features" / "driver_stats" / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["sql"] = f"select * from read_parquet('{card_data}')"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        defs = build()
        result = dg.materialize(
            [
                defs.get_assets_def(["ridehail", "sources", "trips"]),
                defs.get_assets_def(["ridehail", "features", "driver_stats"]),
            ],
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )
    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    message = error.cause.message if error.cause else error.message
    assert f"{path}: attributes.sql: feature set 'ridehail/driver_stats'" in message
    assert f'Cannot access file "{card_data}"' in message
    assert not (lake / "ridehail" / "features").exists()
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["ridehail", "features", "driver_stats"]) not in materialized
