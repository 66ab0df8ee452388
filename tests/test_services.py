"""The production code path: a tenant's pipeline with Dagster, the Feast registry and MLflow on
Postgres and Feast's online store on Redis (MLPLAT_ENV=services)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import dagster as dg
import psycopg2
import pytest

from tests.platform_sandbox import sandbox

pytestmark = [pytest.mark.services, pytest.mark.materialize]


@pytest.fixture
def databases(postgres_url: str) -> Iterator[dict[str, str]]:
    """Throwaway databases on the real server (Dagster, MLflow, Feast each own one, as in
    production, since their table names overlap), dropped afterwards."""
    names = {
        role: f"mlplat_{role}_{uuid.uuid4().hex[:8]}"
        for role in ("dagster", "mlflow", "feast", "platform")
    }
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    for name in names.values():
        admin.cursor().execute(f"create database {name}")
    try:
        base = postgres_url.rsplit("/", 1)[0]
        yield {role: f"{base}/{name}" for role, name in names.items()}
    finally:
        for name in names.values():
            admin.cursor().execute(f"drop database {name} with (force)")
        admin.close()


def test_tenant_pipeline_on_postgres_and_redis(
    monkeypatch, platform_home, databases, redis_url, tmp_path
):
    import redis

    db = int(redis_url.rsplit("/", 1)[1])
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    monkeypatch.setenv("MLPLAT_ENV", "services")
    monkeypatch.setenv("MLPLAT_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("MLPLAT_FEAST_REGISTRY_URL", databases["feast"])
    monkeypatch.setenv("MLPLAT_REDIS", f"127.0.0.1:6379,db={db}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", databases["mlflow"])
    monkeypatch.setenv("MLPLAT_DB_URL", databases["platform"])  # governance state (champions)
    monkeypatch.setenv("MLPLAT_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    # dagster-postgres issues NOTIFY with a bound parameter, which psycopg 3 (SQLAlchemy 2.1's
    # default for postgresql://) rejects; name the psycopg2 driver explicitly.
    storage = {
        "postgres": {
            "postgres_url": databases["dagster"].replace("postgresql://", "postgresql+psycopg2://")
        }
    }
    with (
        sandbox(monkeypatch) as (_, build),
        dg.instance_for_test(overrides={"storage": storage}) as instance,
    ):
        defs = build()
        result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(
            dg.AssetKey(["ridehail", "evaluation_reports", "driver_churn"])
        )
        version = defs.resources["mlflow"].client().get_model_version("ridehail.driver_churn", "1")
        assert version.tags["tenant"] == "ridehail"

        store = defs.resources["feast"].store("ridehail")
        assert {v.name for v in store.list_feature_views()} == {"driver_stats", "zone_demand"}
        store.materialize(start_date=datetime(2026, 1, 1), end_date=datetime(2026, 4, 3))
        online = store.get_online_features(
            features=["driver_stats:trips_7d"], entity_rows=[{"driver_id": "d0001"}]
        ).to_dict()
        assert online["trips_7d"][0] is not None
        keys = redis.Redis(host="127.0.0.1", port=6379, db=db).keys("*")
        assert keys, "features were not written to Redis"
