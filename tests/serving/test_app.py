"""`mlplat serve` against a real tenant: ridehail's pipeline run once (real Feast online store,
MLflow registry, governance database in a temp dir), the app through FastAPI's TestClient."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.served_tenant import MODEL, REGISTERED, TENANT, Served, served_tenant
from platform_assets.serving.app import Service, create_app
from platform_assets.serving.requestlog import RequestLog

pytestmark = pytest.mark.materialize
URL = f"/v1/models/{REGISTERED}:predict"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    with pytest.MonkeyPatch.context() as mp, served_tenant(tmp_path_factory.mktemp("srv"), mp) as s:
        yield s


@pytest.fixture(autouse=True)
def champion_v1(served: Served):
    served.set_champion(1)
    yield


@contextmanager
def client(served: Served, **kw) -> Iterator[tuple[TestClient, Service]]:
    from platform_assets.governance.workflow import open_store

    log = RequestLog(served.resources["lake"], kw.pop("log_rows", 1000), kw.pop("log_seconds", 60))
    service = Service(
        served.catalogs,
        kw.pop("feast", served.resources["feast"]),
        served.resources["mlflow"],
        open_store(),
        log,
        champion_ttl=kw.pop("ttl", 60.0),
        **kw,
    )
    with TestClient(create_app(service)) as c:
        yield c, service


def load(served: Served, version: int):
    import mlflow

    served.resources["mlflow"].client()
    return mlflow.sklearn.load_model(f"models:/{REGISTERED}/{version}")


def sdk_features(served: Served, entities: list[dict], feast=None) -> pd.DataFrame:
    """The same features through Feast's own retrieval path, independent of the app's read."""
    store = (feast or served.resources["feast"]).store(TENANT)
    service = store.get_feature_service(f"{MODEL}_v1")
    return pd.DataFrame(store.get_online_features(features=service, entity_rows=entities).to_dict())


def expected_scores(served: Served, version: int, entities: list[dict], feast=None) -> list[float]:
    model = load(served, version)
    frame = sdk_features(served, entities, feast)[list(model.feature_names_in_)]
    frame = frame.astype("float64")
    return list(model.predict_proba(frame)[:, 1])


def register_v2(served: Served) -> int:
    """Another real version: logistic regression on the same training set."""
    import mlflow

    from platform_assets.models.component import TRUSTED_TYPES
    from platform_assets.models.training import build_pipeline, feature_columns

    df = served.resources["lake"].read(TENANT, "training_sets", MODEL).to_pandas()
    cols = feature_columns(df, ["driver_id", "zone_id"], "churned")
    pipeline = build_pipeline("logistic_regression", {"C": 0.1, "max_iter": 300})
    pipeline.fit(df[cols].astype("float64"), df["churned"].astype(int))
    res = served.resources["mlflow"]
    with mlflow.start_run(experiment_id=res.ensure_experiment(f"{TENANT}/{MODEL}")):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=REGISTERED,
            skops_trusted_types=TRUSTED_TYPES,
        )
    return int(info.registered_model_version)


def register_broken(served: Served) -> int:
    """A version whose artifact is not a model (an empty folder)."""
    res = served.resources["mlflow"]
    client = res.client()
    run = client.create_run(res.ensure_experiment(f"{TENANT}/{MODEL}"))
    empty = served.root.parent / f"empty-artifact-{run.info.run_id}"
    empty.mkdir()
    return int(client.create_model_version(REGISTERED, empty.as_uri(), run.info.run_id).version)


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_predict_returns_the_champions_scores(served: Served):
    entities = served.entities(3)
    with client(served) as (c, _):
        response = c.post(URL, json={"entities": entities})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == 1
        assert body["predictions"] == pytest.approx(expected_scores(served, 1, entities), abs=1e-9)
        sdk = sdk_features(served, entities)
        oldest = min(sdk["driver_stats_ts"].min(), sdk["zone_demand_ts"].min())
        assert pd.Timestamp(body["features_as_of"]) == pd.Timestamp(oldest)
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["models"][REGISTERED]["status"] == "serving"
        assert ready.json()["models"][REGISTERED]["runtime"] == "treelite"


@pytest.fixture
def redis_feast(served: Served, redis_url):
    """The tenant's Feast project on a Redis online store (db 12, this module's own): its registry
    copied, both views materialized into Redis; only the project's keys are removed after."""
    import shutil

    import redis

    from platform_assets.resources.feature_store import FeastResource

    root = served.root.parent / "feast-redis"
    (root / TENANT).mkdir(parents=True, exist_ok=True)
    sqlite_repo = served.resources["feast"].repo(TENANT)
    shutil.copy(sqlite_repo / "registry.db", root / TENANT / "registry.db")
    feast = FeastResource(root=str(root), redis="127.0.0.1:6379,db=12")
    store = feast.store(TENANT)
    store.materialize(pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp.now(tz="UTC"))
    try:
        yield feast
    finally:
        client = redis.Redis(host="127.0.0.1", port=6379, db=12)
        for key in client.scan_iter():
            if key.endswith(TENANT.encode()):
                client.delete(key)


def test_predict_reads_a_redis_online_store(served: Served, redis_feast):
    entities = served.entities(3)
    with client(served, feast=redis_feast) as (c, _):
        response = c.post(URL, json={"entities": entities})
        assert response.status_code == 200, response.text
        expected = expected_scores(served, 1, entities, redis_feast)
        assert response.json()["predictions"] == pytest.approx(expected, abs=1e-9)
        response = c.post(URL, json={"entities": [{**entities[0], "zone_id": "nowhere"}]})
        assert response.status_code == 404
        assert "'nowhere' is not in the online store" in response.json()["detail"]


def test_follows_the_champion_and_keeps_the_previous_on_a_broken_artifact(served: Served):
    entities = served.entities(2)
    v2 = register_v2(served)
    with client(served, ttl=0.2) as (c, _):
        assert c.post(URL, json={"entities": entities}).json()["model_version"] == 1
        served.set_champion(v2)  # no restart: the app re-checks the champion on its TTL
        moved = wait_for(
            lambda: (
                (b := c.post(URL, json={"entities": entities}).json())["model_version"] == v2 and b
            )
        )
        assert moved, "the app did not follow the champion"
        assert moved["predictions"] == pytest.approx(expected_scores(served, v2, entities))

        broken = register_broken(served)
        served.set_champion(broken)
        problem = wait_for(lambda: c.get("/readyz").json()["models"][REGISTERED]["problem"])
        assert problem.startswith(f"champion v{broken} of {REGISTERED} could not be loaded")
        assert problem.endswith(f"still serving v{v2}")
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["models"][REGISTERED]["status"] == "degraded"
        assert problem in ready.json()["problems"]
        response = c.post(URL, json={"entities": entities})
        assert response.status_code == 200 and response.json()["model_version"] == v2


def test_no_loadable_champion_is_a_503_naming_why(served: Served):
    served.set_champion(register_broken(served))
    with client(served) as (c, _):
        response = c.post(URL, json={"entities": served.entities(1)})
        assert response.status_code == 503
        assert "could not be loaded" in response.json()["detail"]
        assert "nothing to serve" in response.json()["detail"]
        assert c.get("/readyz").json()["models"][REGISTERED]["status"] == "unavailable"


BAD = [
    (
        "unknown model",
        "/v1/models/ridehail.nope:predict",
        lambda e: {"entities": e},
        404,
        "model: unknown model 'ridehail.nope' (served: ridehail.driver_churn)",
    ),
    (
        "missing entity key",
        URL,
        lambda e: {"entities": [{"driver_id": e[0]["driver_id"]}]},
        422,
        "entities[0].zone_id: missing (model ridehail.driver_churn needs driver_id, zone_id)",
    ),
    (
        "wrong type",
        URL,
        lambda e: {"entities": [{**e[0], "driver_id": 5}]},
        422,
        "entities[0].driver_id: expected a string, got int 5",
    ),
    (
        "unknown entity",
        URL,
        lambda e: {"entities": [e[0], {**e[0], "driver_id": "nobody"}]},
        404,
        "entities[1].driver_id: 'nobody' is not in the online store of feature view "
        "ridehail/driver_stats",
    ),
    ("no entities", URL, lambda e: {"entities": []}, 422, "entities: expected a non-empty list"),
    ("not an object", URL, lambda e: [1], 422, 'body: expected {"entities": [{...}, ...]}'),
]


@pytest.mark.parametrize(("case", "url", "body", "status", "detail"), BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_a_clear_4xx_and_the_service_keeps_serving(
    served: Served, case, url, body, status, detail
):
    entities = served.entities(1)
    with client(served) as (c, _):
        response = c.post(url, json=body(entities))
        assert response.status_code == status
        assert response.json()["detail"].startswith(detail)
        assert c.post(URL, json={"entities": entities}).status_code == 200


def test_not_json_is_a_400(served: Served):
    with client(served) as (c, _):
        response = c.post(URL, content=b"{nope", headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("body: not JSON")


def test_a_feature_missing_from_the_online_store_is_named(served: Served):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    [entity] = served.entities(1)
    store = served.resources["feast"].store(TENANT)
    key = serialize_entity_key(
        EntityKey(join_keys=["zone_id"], entity_values=[Value(string_val=entity["zone_id"])]),
        entity_key_serialization_version=3,
    )
    # A feature whose value never reached the online store (e.g. added to the view later).
    with sqlite3.connect(store.config.online_store.path) as db:
        removed = db.execute(
            f"DELETE FROM {TENANT}_zone_demand WHERE entity_key = ? AND feature_name = ?",
            (key, "zone_avg_fare_7d"),
        ).rowcount
    assert removed == 1
    try:
        with client(served) as (c, _):
            response = c.post(URL, json={"entities": [entity]})
            assert response.status_code == 409
            assert response.json()["detail"] == (
                f"feature zone_demand:zone_avg_fare_7d is missing from the online store for "
                f"zone_id={entity['zone_id']!r} (materialize ridehail/online/zone_demand)"
            )
            other = [e for e in served.entities(20) if e["zone_id"] != entity["zone_id"]][:1]
            assert c.post(URL, json={"entities": other}).status_code == 200
    finally:
        store.materialize(
            pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp.now(tz="UTC"), ["zone_demand"]
        )


def test_services_needs_a_token_of_a_member_of_the_tenant(served: Served, tmp_path, monkeypatch):
    from platform_assets.governance.demo_idp import LocalIdP

    idp = LocalIdP(tmp_path / "idp")
    for k, v in idp.env().items():
        monkeypatch.setenv(k, v)
    entities = served.entities(1)
    body = {"entities": entities}
    with client(served, require_identity=True, admins=["ada@platform.example"]) as (c, _):
        response = c.post(URL, json=body)
        assert response.status_code == 401
        assert response.json()["detail"] == "Authorization: a bearer OIDC ID token is required"
        outsider = {"authorization": f"Bearer {idp.issue('grace@growth.example')}"}
        response = c.post(URL, json=body, headers=outsider)
        assert response.status_code == 403
        assert response.json()["detail"] == (
            "grace@growth.example does not belong to tenant ridehail (model ridehail.driver_churn)"
        )
        expired = {"authorization": f"Bearer {idp.issue('victor@ridehail.example', ttl=-120)}"}
        response = c.post(URL, json=body, headers=expired)
        assert response.status_code == 401
        assert "Signature has expired" in response.json()["detail"]
        for member in ("victor@ridehail.example", "ada@platform.example"):
            headers = {"authorization": f"Bearer {idp.issue(member)}"}
            assert c.post(URL, json=body, headers=headers).status_code == 200


def test_request_log_batches_land_in_the_lake_with_the_agreed_columns(served: Served):
    import pyarrow as pa

    lake = served.resources["lake"]
    before = lake.batches(TENANT, "serving", MODEL)
    seen = before.num_rows if before is not None else 0
    entities = served.entities(3)
    with client(served, log_rows=4, log_seconds=60) as (c, service):
        ok = c.post(URL, json={"entities": entities}).json()
        assert c.post(URL, json={"entities": [{"driver_id": "x"}]}).status_code == 422
        # 4 rows: the batch is written without waiting for the 60 s timer.
        assert wait_for(lambda: service.request_log.batches_written == 1)
        assert c.post(URL, json={"entities": entities[:1]}).status_code == 200
    # ... and the row buffered at shutdown is flushed on close.
    log = lake.batches(TENANT, "serving", MODEL)
    assert log.num_rows - seen == 5
    utc = pa.timestamp("us", tz="UTC")
    expected = {
        "request_id": pa.string(),
        "ts": utc,
        "tenant": pa.string(),
        "model": pa.string(),
        "model_version": pa.int64(),
        "status": pa.int32(),
        "error": pa.string(),
        "latency_ms": pa.float64(),
        "prediction": pa.float64(),
        "features_as_of": utc,
        "driver_id": pa.string(),
        "zone_id": pa.string(),
    }
    model = load(served, 1)
    for feature in model.feature_names_in_:  # the training set's feature columns
        expected[feature] = pa.float64()
    assert {f.name: f.type for f in log.schema} == expected
    rows = log.to_pandas().iloc[seen:].sort_values("ts", kind="stable")
    scored = rows[rows["status"] == 200].head(3)
    assert scored["request_id"].nunique() == 1
    assert list(scored["driver_id"]) == [e["driver_id"] for e in entities]
    assert list(scored["prediction"]) == pytest.approx(ok["predictions"])
    assert (scored["model_version"] == 1).all() and (scored["latency_ms"] > 0).all()
    sdk = sdk_features(served, entities)
    for feature in model.feature_names_in_:
        assert list(scored[feature]) == pytest.approx(list(sdk[feature].astype(float)))
    [error] = rows[rows["status"] == 422].itertuples()
    assert error.error.startswith("entities[0].zone_id: missing")
    assert math.isnan(error.prediction) and error.tenant == TENANT and error.model == MODEL
