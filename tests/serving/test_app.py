"""`mlplat serve` against a real tenant: ridehail's pipeline run once (real Feast online store,
MLflow registry, governance database in a temp dir), the app through FastAPI's TestClient, and
under uvicorn on loopback where the server's own handling of the connection is what is tested
(bodies refused before or while they are read)."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import select
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.served_tenant import (
    MODEL,
    REGISTERED,
    TENANT,
    Served,
    artifact_folder,
    register_sklearn,
    served_tenant,
)
from platform_assets.models.artifacts import artifact_digest
from platform_assets.models.flavors import load_verified
from platform_assets.resources.lake import LakeResource
from platform_assets.serving.app import Service, create_app
from platform_assets.serving.app import server as serve_app
from platform_assets.serving.requestlog import RequestLog
from platform_assets.serving.spool import Spool
from tests.conftest import S3_CREDENTIALS, start_s3_server

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


def make_service(served: Served, **kw) -> Service:
    from platform_assets.governance.workflow import open_store

    spool = kw.pop("spool", None) or Spool(
        served.root.parent / f"spool-{uuid.uuid4().hex}", 64 << 20
    )
    log = RequestLog(
        kw.pop("lake", served.resources["lake"]),
        spool,
        kw.pop("log_rows", 1000),
        kw.pop("log_seconds", 60),
        **{k: kw.pop(k) for k in ("retry_seconds", "max_retry_seconds") if k in kw},
    )
    return Service(
        served.catalogs,
        kw.pop("feast", served.resources["feast"]),
        served.resources["mlflow"],
        open_store(),
        log,
        champion_ttl=kw.pop("ttl", 60.0),
        **kw,
    )


@contextmanager
def client(served: Served, **kw) -> Iterator[tuple[TestClient, Service]]:
    service = make_service(served, **kw)
    with TestClient(create_app(service)) as c:
        yield c, service


def load(served: Served, version: int):
    return load_verified(served.resources["mlflow"], REGISTERED, version, served.artifacts[version])


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
    """Another real version: logistic regression on the same training set, its hash recorded
    as the model step records it."""
    from platform_assets.models.training import build_pipeline, feature_columns

    df = served.resources["lake"].read(TENANT, "training_sets", MODEL).to_pandas()
    cols = feature_columns(df, ["driver_id", "zone_id"], "churned")
    pipeline = build_pipeline("logistic_regression", {"C": 0.1, "max_iter": 300})
    X = df[cols].astype("float64")
    pipeline.fit(X, df["churned"].astype(int))
    version, digest = register_sklearn(served.resources["mlflow"], REGISTERED, pipeline, X)
    served.artifacts[version] = digest
    return version


def register_broken(served: Served) -> int:
    """A version whose artifact is not a model (an empty folder), its hash recorded: it
    verifies, and fails to load."""
    res = served.resources["mlflow"]
    client = res.client()
    run = client.create_run(res.ensure_experiment(f"{TENANT}/{MODEL}"))
    empty = served.root.parent / f"empty-artifact-{run.info.run_id}"
    empty.mkdir()
    version = int(client.create_model_version(REGISTERED, empty.as_uri(), run.info.run_id).version)
    served.artifacts[version] = artifact_digest(empty)
    return version


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
        assert response.json()["detail"] == (
            "entities[0].zone_id: not in the online store of feature view ridehail/zone_demand"
        )


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


@contextmanager
def replaced(served: Served, version: int, files: dict[str, bytes]) -> Iterator[str]:
    """Version `version`'s files in MLflow's artifact store changed behind the platform's back
    (as anyone with write access to the store could), put back afterwards; yields their new
    content hash."""
    folder = artifact_folder(served.resources["mlflow"], REGISTERED, version)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        yield artifact_digest(folder)
    finally:
        for path in folder.iterdir():
            if path.name not in saved:
                path.unlink()
        for name, data in saved.items():
            (folder / name).write_bytes(data)


def test_a_champion_replaced_in_mlflow_is_refused_and_readyz_says_so(served: Served):
    import skops.io

    from platform_assets.models.training import build_pipeline, feature_columns

    df = served.resources["lake"].read(TENANT, "training_sets", MODEL).to_pandas()
    cols = feature_columns(df, ["driver_id", "zone_id"], "churned")
    swapped = build_pipeline("logistic_regression", {}).fit(
        df[cols].astype("float64"), df["churned"].astype(int)
    )
    recorded = served.artifacts[1]
    with replaced(served, 1, {"model.skops": skops.io.dumps(swapped)}) as actual:
        with client(served) as (c, _):
            ready = c.get("/readyz").json()
            response = c.post(URL, json={"entities": served.entities(1)})
    problem = (
        f"champion v1 of {REGISTERED} could not be loaded (ArtifactRefused: {REGISTERED} v1: "
        f"artifact refused: its files hash to sha256 {actual[:12]}..., not the "
        f"{recorded[:12]}... the platform recorded when it registered the version (changed in "
        "MLflow since); not loaded); nothing to serve"
    )
    assert ready["models"][REGISTERED]["status"] == "unavailable"
    assert ready["models"][REGISTERED]["problem"] == problem
    assert ready["problems"] == [problem]
    assert (response.status_code, response.json()) == (503, {"detail": problem})
    # Put back, the same champion verifies and serves.
    with client(served) as (c, _):
        status = c.get("/readyz").json()["models"][REGISTERED]
        assert (status["status"], status["artifact_sha256"]) == ("serving", recorded[:12])


class Bomb:
    """A pickle that, when loaded, creates `marker`: proof that a load ran its bytes."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_place_of_the_champion_never_runs(served: Served, tmp_path):
    marker = tmp_path / "the-pickle-ran"
    bomb = pickle.dumps(Bomb(str(marker)))
    with replaced(served, 1, {"model.skops": bomb, "model.pkl": bomb}):
        with client(served) as (c, _):
            problem = c.get("/readyz").json()["models"][REGISTERED]["problem"]
    assert f"ArtifactRefused: {REGISTERED} v1: artifact refused: its files hash to" in problem
    assert not marker.exists()
    pickle.loads(bomb)  # the bomb is live: serving did not run it
    assert marker.exists()


BAD = [
    (
        "unknown model",
        "/v1/models/ridehail.nope:predict",
        lambda e: {"entities": e},
        404,
        "model: no such model among those you may call (ridehail.driver_churn)",
    ),
    (
        "missing entity key",
        URL,
        lambda e: {"entities": [{"driver_id": e[0]["driver_id"]}]},
        422,
        "entities[0].zone_id: missing (model ridehail.driver_churn takes driver_id, zone_id)",
    ),
    (
        "wrong type",
        URL,
        lambda e: {"entities": [{**e[0], "driver_id": 5}]},
        422,
        "entities[0].driver_id: expected a string, got int",
    ),
    (
        "key too long",
        URL,
        lambda e: {"entities": [{**e[0], "driver_id": "d" * 257}]},
        422,
        "entities[0].driver_id: longer than 256 characters",
    ),
    (
        "a field the model does not take",
        URL,
        lambda e: {"entities": [e[0], {**e[0], "note": "x"}]},
        422,
        "entities[1]: 1 field(s) too many (model ridehail.driver_churn takes driver_id, zone_id)",
    ),
    (
        "too many entities",
        URL,
        lambda e: {"entities": e * 1001},
        422,
        "entities: at most 1000 per request",
    ),
    (
        "unknown entity",
        URL,
        lambda e: {"entities": [e[0], {**e[0], "driver_id": "nobody"}]},
        404,
        "entities[1].driver_id: not in the online store of feature view ridehail/driver_stats",
    ),
    (
        "no entities",
        URL,
        lambda e: {"entities": []},
        422,
        "entities: expected a non-empty list of objects",
    ),
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
        assert response.json()["detail"] == detail
        assert c.post(URL, json={"entities": entities}).status_code == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{nope", "body: not JSON (Expecting property name enclosed in double quotes"),
        (b"[" * 200_000, "body: not JSON (nested too deeply)"),
    ],
    ids=["not json", "nested too deeply"],
)
def test_not_json_is_a_400(served: Served, body: bytes, detail: str):
    with client(served) as (c, _):
        response = c.post(URL, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert response.json()["detail"].startswith(detail)


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
                "feature zone_demand:zone_avg_fare_7d is missing from the online store for "
                "entities[0].zone_id (materialize ridehail/online/zone_demand)"
            )
            other = [e for e in served.entities(20) if e["zone_id"] != entity["zone_id"]][:1]
            assert c.post(URL, json={"entities": other}).status_code == 200
    finally:
        store.materialize(
            pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp.now(tz="UTC"), ["zone_demand"]
        )


@pytest.fixture
def idp(tmp_path, monkeypatch):
    from platform_assets.governance.demo_idp import LocalIdP

    idp = LocalIdP(tmp_path / "idp")
    for k, v in idp.env().items():
        monkeypatch.setenv(k, v)
    return idp


def bearer(idp, who: str, **kw) -> dict[str, str]:
    return {"authorization": f"Bearer {idp.issue(who, **kw)}"}


def logged_since(served: Served, seen: int) -> pd.DataFrame:
    """The request-log rows of the served model written after the first `seen`."""
    log = served.resources["lake"].batches(TENANT, "serving", MODEL)
    return log.to_pandas().iloc[seen:] if log is not None else pd.DataFrame()


def logged(served: Served) -> int:
    return len(logged_since(served, 0))


def test_services_needs_a_token_of_a_member_of_the_tenant(served: Served, idp):
    body = {"entities": served.entities(1)}
    unknown = "/v1/models/ridehail.nope:predict"
    seen = logged(served)
    with client(served, require_identity=True, admins=["ada@platform.example"]) as (c, _):
        # Anonymous: the same 401 whether the model exists or not.
        for url in (URL, unknown):
            response = c.post(url, json=body)
            assert response.status_code == 401
            assert response.json()["detail"] == "Authorization: a bearer OIDC ID token is required"
        expired = bearer(idp, "victor@ridehail.example", ttl=-120)
        response = c.post(URL, json=body, headers=expired)
        assert response.status_code == 401
        assert response.json()["detail"] == (
            "Authorization: the ID token was refused (ExpiredSignatureError)"
        )
        # Another tenant's model is answered as an unknown one: nothing says it exists.
        outsider = bearer(idp, "grace@growth.example")
        for url in (URL, unknown):
            response = c.post(url, json=body, headers=outsider)
            assert response.status_code == 404
            assert response.json()["detail"] == "model: no such model among those you may call"
        member = bearer(idp, "victor@ridehail.example")
        response = c.post(unknown, json=body, headers=member)
        assert response.status_code == 404
        assert response.json()["detail"] == (
            "model: no such model among those you may call (ridehail.driver_churn)"
        )
        for who in ("victor@ridehail.example", "ada@platform.example"):
            assert c.post(URL, json=body, headers=bearer(idp, who)).status_code == 200
        # Readiness for anyone; which models, and how they are, only for their callers.
        anonymous = c.get("/readyz")
        assert anonymous.status_code == 200
        assert anonymous.json()["models"] == {} and anonymous.json()["problems"] == []
        assert list(c.get("/readyz", headers=outsider).json()["models"]) == []
        assert list(c.get("/readyz", headers=member).json()["models"]) == [REGISTERED]
    # Only the admitted calls reached the tenant's request log: the two predictions.
    assert list(logged_since(served, seen)["status"]) == [200, 200]


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


def test_the_request_log_keeps_every_row_through_an_s3_outage_and_a_restart(
    served: Served, tmp_path, monkeypatch
):
    """The request log's lake is a real S3 server (moto), killed while the service logs
    requests, and started again on the same port. moto keeps its buckets in memory, so the test
    creates the bucket again and puts back the objects it held before; every row lands once, in
    the order the requests were served, including the rows of a service stopped and started
    again on the same spool during the outage. Figures at INFO (--log-cli-level=INFO)."""
    import boto3

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    proc, url = start_s3_server()
    s3 = boto3.client("s3", endpoint_url=url)
    s3.create_bucket(Bucket="outage")
    lake = LakeResource(root="s3://outage/lake", endpoint_url=url)
    folder = tmp_path / "spool"
    entities = served.entities(10)
    assert len(entities) == 10
    sent: list[dict[str, str]] = []

    def ask(c: TestClient, n: int) -> None:
        for _ in range(n):
            entity = entities[len(sent)]
            assert c.post(URL, json={"entities": [entity]}).status_code == 200
            sent.append(entity)

    def in_lake() -> int:
        table = lake.batches(TENANT, "serving", MODEL)
        return 0 if table is None else table.num_rows

    def spooled(service: Service) -> int:
        """Rows in the spool (requests that arrive together may share a batch)."""
        return sum(b.rows for b in service.request_log.spool.pending())

    # A batch as soon as a row is buffered, retried every 0.1 s to 0.5 s.
    kw = {"lake": lake, "log_rows": 1, "retry_seconds": 0.1, "max_retry_seconds": 0.5}
    try:
        with client(served, spool=Spool(folder, 64 << 20), **kw) as (c, service):
            ask(c, 3)
            assert wait_for(lambda: in_lake() == 3)
            written = service.request_log.batches_written
            before = {
                o["Key"]: s3.get_object(Bucket="outage", Key=o["Key"])["Body"].read()
                for o in s3.list_objects_v2(Bucket="outage")["Contents"]
            }
            proc.kill()
            proc.wait()
            down = time.perf_counter()
            ask(c, 4)
            assert wait_for(lambda: spooled(service) == 4 and service.request_log.last_error)
            ready = c.get("/readyz").json()
            batches = len(service.request_log.spool.pending())
            assert ready["request_log"]["spooled_batches"] == batches
            assert ready["request_log"]["dropped_rows"] == 0
            [problem] = ready["problems"]
            assert problem.startswith(f"request log: {batches} batch(es) (")
            assert "kept in the spool since" in problem and "the lake refused the last" in problem
        # Stopped while the lake is down: the batches wait on disk for the next start.
        assert len(list(folder.glob("ridehail/driver_churn/*.arrow"))) == batches
        with client(served, spool=Spool(folder, 64 << 20), **kw) as (c, service):
            assert spooled(service) == 4
            ask(c, 2)
            assert wait_for(lambda: spooled(service) == 6)
            proc, _ = start_s3_server(int(url.rsplit(":", 1)[1]))
            back = time.perf_counter()
            s3.create_bucket(Bucket="outage")
            for key, body in before.items():
                s3.put_object(Bucket="outage", Key=key, Body=body)
            assert wait_for(lambda: spooled(service) == 0)
            flushed = time.perf_counter()
            ask(c, 1)
            assert wait_for(lambda: in_lake() == 10)
            written += service.request_log.batches_written
            ready = c.get("/readyz").json()
            assert ready["problems"] == [] and ready["request_log"]["spooled_batches"] == 0
        logging.getLogger(__name__).info(
            "S3 down %.1f s; the 6 spooled rows in the lake %.2f s after its restart "
            "(bucket restore included)",
            back - down,
            flushed - back,
        )
        log = lake.batches(TENANT, "serving", MODEL).to_pandas()
        assert log[["driver_id", "zone_id"]].to_dict("records") == sent
        assert log["request_id"].nunique() == 10
        # Each batch one object: none written twice under two names.
        assert len(lake.log_files(TENANT, "serving", MODEL)) == written
        assert not list(folder.glob("*/*/*.arrow"))
    finally:
        proc.kill()
        proc.wait()


# --- against a real server on loopback, as `mlplat serve` runs it ---------------------------

HUGE = 150 * 2**20  # the size of the attack: 150 MB


@contextmanager
def live_server(served: Served, **kw) -> Iterator[tuple[int, Service]]:
    """The app under uvicorn as `mlplat serve` runs it (`serving.app.server`), in a thread, on a
    free loopback port; the request log is flushed when it stops."""
    service = make_service(served, **kw)
    server = serve_app(create_app(service), "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    assert wait_for(lambda: server.started or not thread.is_alive(), 120) and server.started
    try:
        yield server.servers[0].sockets[0].getsockname()[1], service
    finally:
        server.should_exit = True
        thread.join()


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(total: int, size: int = 16 * 2**10, fill: bytes = b"x") -> Iterator[bytes]:
    """`total` bytes of body in chunked transfer coding, one `size` chunk at a time."""
    for _ in range(total // size):
        yield b"%x\r\n" % size + fill * size + b"\r\n"
    yield b"0\r\n\r\n"


@dataclass
class Exchange:
    status: int | None  # None: the server cut the connection before its answer could be read
    head: str
    body: bytes
    sent: int  # bytes of `rest` the client got to send before the server answered


def exchange(port: int, first: bytes, rest: Iterable[bytes] = ()) -> Exchange:
    """Send `first` (a request's head), then `rest` for as long as the server has not answered,
    over a raw socket; then read the answer until the server closes the connection."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(first)
        for part in rest:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(part)
        response = b""
        try:
            while data := sock.recv(2**16):
                response += data
        except ConnectionResetError:
            # Closing with unread data sends a reset, which can overtake the answer.
            pass
    top, _, body = response.partition(b"\r\n\r\n")
    return Exchange(int(top.split()[1]) if top else None, top.decode(), body, sent)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_an_anonymous_call_is_refused_from_its_headers_without_reading_the_body(
    served: Served, idp, caplog
):
    caplog.set_level(logging.INFO)
    seen = logged(served)
    member = bearer(idp, "victor@ridehail.example")
    entities = served.entities(1)
    with live_server(served, require_identity=True) as (port, _):
        ok = httpx.post(
            f"http://127.0.0.1:{port}{URL}", json={"entities": entities}, headers=member
        )
        assert ok.status_code == 200, ok.text
        before = rss_mb()
        for path in (URL, "/v1/models/ridehail.nope:predict"):
            # 150 MB announced, nothing sent, and the client waits to be asked for it (Expect):
            # the answer comes from the headers alone, and no `100 Continue` is ever sent.
            declared = exchange(
                port, head(path, {"content-length": str(HUGE), "expect": "100-continue"})
            )
            assert declared.status == 401 and "100 Continue" not in declared.head
            assert json.loads(declared.body) == {
                "detail": "Authorization: a bearer OIDC ID token is required"
            }
            assert "connection: close" in declared.head
        # ... and streamed as it goes, without a length: refused, the connection closed.
        streamed = exchange(port, head(URL, {"transfer-encoding": "chunked"}), chunked(HUGE))
        assert streamed.status == 401 and streamed.sent < HUGE
        outsider = exchange(
            port, head(URL, {"content-length": str(HUGE), **bearer(idp, "grace@growth.example")})
        )
        assert outsider.status == 404
        assert json.loads(outsider.body) == {
            "detail": "model: no such model among those you may call"
        }
        assert rss_mb() - before < 50, "the server held the refused bodies in memory"
    assert list(logged_since(served, seen)["status"]) == [200]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert sum("refused 401, no bearer token" in m for m in refusals) == 3
    assert any(
        m.endswith("refused 404, ridehail.driver_churn for grace@growth.example") for m in refusals
    )


def test_a_body_over_the_limit_is_refused_as_it_streams(served: Served, caplog):
    caplog.set_level(logging.INFO)
    seen = logged(served)
    limit = "body: larger than the limit of 1048576 bytes"
    with live_server(served) as (port, _):
        httpx.post(f"http://127.0.0.1:{port}{URL}", json={"entities": served.entities(1)})
        before = rss_mb()
        declared = exchange(port, head(URL, {"content-length": str(HUGE)}))
        assert declared.status == 413 and declared.sent == 0
        assert json.loads(declared.body) == {"detail": limit}
        # Chunked, no Content-Length: refused once the chunks pass the limit.
        streamed = exchange(port, head(URL, {"transfer-encoding": "chunked"}), chunked(HUGE))
        assert streamed.status == 413 and streamed.sent < HUGE
        assert json.loads(streamed.body) == {"detail": limit}
        assert rss_mb() - before < 50, "the server held the oversized body in memory"
        # The request line and headers have their own cap: past it, a 400 that says nothing of
        # the request, and a 150 MB header is cut off long before its end.
        long_header = exchange(port, head(URL, {"x-key": "k" * 40 * 2**10})[:-4])
        assert long_header.status == 400
        assert long_header.body == b"request line and headers: larger than the limit of 32768 bytes"
        huge_header = exchange(
            port, head(URL, {"x-key": ""})[:-4], (b"k" * 2**16 for _ in range(2400))
        )
        assert huge_header.status in (400, None) and huge_header.sent < HUGE
    rows = logged_since(served, seen)
    assert list(rows["status"]) == [200, 413, 413]
    assert list(rows["error"].iloc[1:]) == [limit, limit]


def test_a_client_that_leaves_mid_body_gets_a_400_not_a_server_error(served: Served, capfd):
    seen = logged(served)
    with live_server(served) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head(URL, {"content-length": "1000"}) + b'{"entities": [')
        assert wait_for(lambda: logged_since(served, seen).shape[0] == 1, 60)
    rows = logged_since(served, seen)
    assert list(rows["status"]) == [400]
    assert list(rows["error"]) == ["body: the client disconnected before sending all of it"]
    assert "Exception in ASGI application" not in capfd.readouterr().err


def test_an_oversized_key_is_named_and_never_echoed(served: Served, idp, caplog, capfd):
    caplog.set_level(logging.INFO)
    seen = logged(served)
    [entity] = served.entities(1)
    key = f"oversized-{uuid.uuid4().hex}-" + "k" * 100_000
    member = bearer(idp, "victor@ridehail.example")
    with live_server(served, require_identity=True) as (port, _):
        response = httpx.post(
            f"http://127.0.0.1:{port}{URL}",
            json={"entities": [{**entity, "driver_id": key}]},
            headers=member,
        )
        assert response.status_code == 422
        assert response.json() == {"detail": "entities[0].driver_id: longer than 256 characters"}
        # Where the key is a well-formed path: not echoed in the 404 either.
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/{key[:4000]}:predict", json={}, headers=member
        )
        assert response.status_code == 404
    marker = key[:40]
    assert marker not in response.text
    # The server's log (the test's own HTTP client logs the URL it calls: not the server's).
    server_log = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert any("422 entities[0].driver_id: longer than 256" in m for m in server_log)
    assert not any(marker in m for m in server_log)
    assert marker not in capfd.readouterr().err
    rows = logged_since(served, seen)
    assert list(rows["status"]) == [422]
    assert not rows.astype(str).apply(lambda c: c.str.contains(marker)).any().any()
