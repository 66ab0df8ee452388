"""`mlplat serve`: the champion of every tenant model, scored on features from the online store.

`POST /v1/models/<tenant>.<model>:predict` reads the model's FeatureService from the Feast
online store of each view's owner, straight from the online store (no SDK retrieval path), and
scores with the platform's champion version (governance state, never MLflow's alias), which a
background thread re-checks every few seconds; a champion whose artifact does not load leaves
the previous one serving, and `/readyz` says so. A tree-ensemble champion scores through its
trees compiled by Treelite once they agree with scikit-learn (serving/runtime.py). A champion is
loaded only from files that hash as the platform recorded when it registered the version, and
only from a safe format (models/artifacts.py); one that does not verify is refused like any other
that does not load.

A request is admitted from its request line and headers alone (identity, model, declared size)
before a byte of its body is read; the body is read as a stream up to a limit. Every admitted
request is logged to its tenant's request log in the lake, through a spool on local disk that
keeps it while the lake is down (serving/requestlog.py); a refused one only to the service's own
log. No refusal repeats what the caller sent.
"""

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platform_assets.env import data_root, deployment
from platform_assets.governance.identity import IdentityRefused, OidcSettings, verify_token
from platform_assets.governance.rbac import platform_admins, roles_of
from platform_assets.governance.workflow import TenantCatalogs, open_store
from platform_assets.models.artifacts import HASH_PREFIX
from platform_assets.models.flavors import load_verified
from platform_assets.resources.deployment import resources_for
from platform_assets.serving.requestlog import LogSchema, RequestLog
from platform_assets.serving.runtime import scorer
from platform_assets.serving.spool import Spool
from platform_assets.tenancy.catalog import check_model_refs

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI, Request

    from platform_assets.governance.store import GovernanceStore
    from platform_assets.resources.feature_store import FeastResource
    from platform_assets.resources.mlflow import MlflowResource
    from platform_assets.serving.runtime import Scorer
    from platform_assets.tenancy.catalog import TenantCatalog

log = logging.getLogger("mlplat.serve")

MAX_ENTITIES = 1000
MAX_KEY_CHARS = 256  # an entity key value (a driver id, a zone id)
# 1000 entities of a few keys at their longest fit with room to spare.
MAX_BODY_BYTES = 1 << 20
# The request line and headers together (h11's buffer for an incomplete event): an OIDC ID token
# with many claims is a few KiB.
MAX_HEADER_BYTES = 32 << 10
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SPOOL_FOLDER = "serving-spool"
# Request-log batches kept on disk while the lake is down. A 1000-row batch of a model with 20
# features is about 290 KiB as Arrow (measured), so this holds about 1.8 million rows: five
# hours of a model answering 100 requests a second.
DEFAULT_SPOOL_BYTES = 512 << 20


class ServingError(Exception):
    """A request the service refuses: HTTP `status`, and `detail` naming the field and the
    limit, never the value the caller sent."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class NotAdmitted(ServingError):
    """Refused from the request line and headers, before the body is read. `reason` is what
    the service's own log says: the platform's words, with nothing the caller chose."""

    def __init__(self, status: int, detail: str, reason: str):
        super().__init__(status, detail)
        self.reason = reason


@dataclass(frozen=True)
class Call:
    """One predict request as it arrives."""

    request_id: str
    received: datetime
    started: float  # perf_counter

    @classmethod
    def now(cls) -> "Call":
        return cls(uuid.uuid4().hex, datetime.now(UTC), time.perf_counter())

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


@dataclass(frozen=True)
class Caller:
    """Who calls, as the service verified it, and the tenants whose models they may call
    (None: every tenant; locally, where no one authenticates, and for platform admins)."""

    name: str | None
    tenants: frozenset[str] | None

    def may_call(self, route: "Route") -> bool:
        return self.tenants is None or route.tenant in self.tenants


async def read_body(request: "Request", limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read as it streams in and abandoned as soon as it passes `limit`: a declared
    Content-Length over the limit is refused before anything is read, a chunked body when its
    chunks pass it."""
    too_large = ServingError(413, f"body: larger than the limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > limit:  # h11 has checked it is a number
        raise too_large
    from starlette.requests import ClientDisconnect

    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect as exc:  # answered like any bad body, not as a server error
        raise ServingError(400, "body: the client disconnected before sending all of it") from exc
    return bytes(body)


@dataclass
class ViewRead:
    """One feature view of a model, read from its owner's online store."""

    owner: str
    name: str
    join_key: str
    features: list[str]  # as named in the training set
    config: Any  # the owner's RepoConfig
    online_store: Any
    view: Any  # feast FeatureView

    def read(self, keys: list[str]) -> list[tuple[datetime | None, dict | None]]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        entity_keys = [
            EntityKey(join_keys=[self.join_key], entity_values=[Value(string_val=k)]) for k in keys
        ]
        # A copy: Redis' online_read appends its timestamp field to the list it is given.
        rows = self.online_store.online_read(
            self.config, self.view, entity_keys, list(self.features)
        )
        # Redis' store answers an entity it does not hold with empty values stamped 1970 (the
        # hash has no timestamp field); SQLite's with None, which is what we make of both.
        return [(None, None) if ts == _UNIX_EPOCH else (ts, v) for ts, v in rows]


@dataclass
class Champion:
    version: int
    scorer: "Scorer"  # how it scores (platform_assets/serving/runtime.py)
    columns: list[str]  # its feature columns, in training order
    artifact_sha256: str  # the content hash its files were verified against


@dataclass
class Route:
    """One servable model: its YAML, features and the champion it currently serves."""

    tenant: str
    model: str
    entity_columns: list[str]
    feature_service: str
    owners: dict[str, str]  # feature view -> owner tenant
    schema: LogSchema
    views: list[ViewRead] | None = None
    serving: Champion | None = None
    champion: int | None = None  # the platform's champion (may differ from `serving`)
    problem: str | None = None

    @property
    def name(self) -> str:
        return f"{self.tenant}.{self.model}"

    def status(self) -> dict[str, Any]:
        state = (
            "no_champion"
            if self.champion is None and self.serving is None
            else "unavailable"
            if self.serving is None
            else "degraded"
            if self.problem
            else "serving"
        )
        return {
            "status": state,
            "champion": self.champion,
            "serving_version": self.serving.version if self.serving else None,
            "runtime": self.serving.scorer.runtime if self.serving else None,
            "artifact_sha256": (
                self.serving.artifact_sha256[:HASH_PREFIX] if self.serving else None
            ),
            "problem": self.problem,
        }


def routes_from(catalogs: Mapping[str, "TenantCatalog"]) -> dict[str, Route]:
    routes = {}
    for tenant, catalog in sorted(catalogs.items()):
        for name, spec in sorted(catalog.models.items()):
            resolved = check_model_refs(catalog, spec)
            owners = {fs.name: owner for owner, fs in resolved.values()}
            # The FeatureService's features as feast_objects.feature_service selects them.
            features: list[str] = []
            for ref in spec.features:
                set_ref, feature = ref.rsplit(":", 1)
                fs = resolved[set_ref][1]
                features += list(fs.features) if feature == "*" else [feature]
            entity_columns = list(spec.labels.entity_columns)
            schema = LogSchema(tenant, name, tuple(entity_columns), tuple(dict.fromkeys(features)))
            route = Route(tenant, name, entity_columns, spec.feature_service, owners, schema)
            routes[route.name] = route
    return routes


def as_float(value: Any) -> float:
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return math.nan
    return float(getattr(value, kind))


class Service:
    """The routes, the online stores and the champion state of one serving process."""

    def __init__(
        self,
        catalogs: Mapping[str, "TenantCatalog"],
        feast: "FeastResource",
        mlflow: "MlflowResource",
        governance: "GovernanceStore",
        request_log: RequestLog,
        *,
        champion_ttl: float = 5.0,
        require_identity: bool = False,
        admins: list[str] | None = None,
    ):
        self.catalogs = catalogs
        self.feast = feast
        self.mlflow = mlflow
        self.governance = governance
        self.request_log = request_log
        self.champion_ttl = champion_ttl
        self.require_identity = require_identity
        self.admins = admins or []
        self.routes = routes_from(catalogs)
        self._stores: dict[str, Any] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed_at: datetime | None = None
        self.refresh_error: str | None = None

    # --- champion state ------------------------------------------------------------------

    def _store(self, tenant: str):
        if tenant not in self._stores:
            self._stores[tenant] = self.feast.store(tenant)
        return self._stores[tenant]

    def _resolve_views(self, route: Route) -> list[ViewRead]:
        """The model's FeatureService, each view read from its owner's online store."""
        from feast.infra.online_stores.helpers import get_online_store_from_config

        service = self._store(route.tenant).get_feature_service(route.feature_service)
        views = []
        for projection in service.feature_view_projections:
            owner = route.owners.get(projection.name, route.tenant)
            store = self._store(owner)
            view = store.get_feature_view(projection.name)
            [join_key] = [c.name for c in view.entity_columns]
            features = [f.name for f in projection.features if f.name != f"{view.name}_ts"]
            views.append(
                ViewRead(
                    owner,
                    view.name,
                    join_key,
                    features,
                    store.config,
                    get_online_store_from_config(store.config.online_store),
                    view,
                )
            )
        return views

    def _load(self, route: Route, version: int, recorded: str | None) -> Champion:
        import numpy as np
        from threadpoolctl import threadpool_limits

        # Its files verified against the hash it was promoted on, then read from its safe format
        # (skops, XGBoost JSON or LightGBM text, by the file the verified folder holds): once,
        # here, never per request.
        model = load_verified(self.mlflow, route.name, version, recorded)
        columns = [str(c) for c in getattr(model, "feature_names_in_", [])]
        available = {f for v in route.views or [] for f in v.features}
        missing = [c for c in columns if c not in available]
        if not columns or missing:
            raise ValueError(
                f"v{version} expects feature(s) {', '.join(missing) or '(none recorded)'} that "
                f"FeatureService {route.feature_service} does not provide"
            )
        # One thread per prediction: a request scores a few rows, and an OpenMP team spun up
        # for them (scikit-learn's gradient boosting) costs milliseconds, hundreds when the
        # machine's cores are busy (measured: p50 228 ms). Throughput comes from requests.
        # threadpoolctl limits the thread pools loaded so far, so after the model's imports.
        threadpool_limits(limits=1)
        scoring = scorer(model, columns)
        log.info(f"{route.name} v{version}: scored by {scoring.runtime} ({scoring.note})")
        # One prediction now, so the first request does not pay for lazy initialisation.
        scoring.predict(np.full((1, len(columns)), np.nan))
        return Champion(version, scoring, columns, recorded or "")

    def refresh(self) -> None:
        """Re-read the platform's champions; load any that changed. Never raises for one model:
        its problem is recorded on its route (and logged), and the others carry on."""
        with self._refresh_lock:
            champions = self.governance.champion_artifacts()
            for route in self.routes.values():
                route.champion, recorded = champions.get(route.name, (None, None))
                if route.champion is None:
                    continue
                if route.serving is not None and route.serving.version == route.champion:
                    route.problem = None
                    continue
                try:
                    if route.views is None:
                        route.views = self._resolve_views(route)
                    loaded = self._load(route, route.champion, recorded)
                except Exception as exc:  # noqa: BLE001 (one broken artifact must not stop the rest)
                    keeps = (
                        f"still serving v{route.serving.version}"
                        if route.serving
                        else "nothing to serve"
                    )
                    route.problem = (
                        f"champion v{route.champion} of {route.name} could not be loaded "
                        f"({type(exc).__name__}: {exc}); {keeps}"
                    )
                    log.error(route.problem)
                    continue
                previous = route.serving.version if route.serving else None
                route.serving, route.problem = loaded, None
                log.info(f"{route.name}: serving champion v{loaded.version} (was {previous})")
            self.refreshed_at = datetime.now(UTC)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.champion_ttl):
            try:
                self.refresh()
                self.refresh_error = None
            except Exception as exc:  # noqa: BLE001 (the governance database may be down)
                # The champions in memory keep serving; /readyz reports the failure.
                self.refresh_error = f"{type(exc).__name__}: {exc}"
                log.error(f"champion refresh failed: {self.refresh_error}")

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._refresh_loop, name="mlplat-champions")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.request_log.close()
        self.governance.dispose()

    # --- requests ------------------------------------------------------------------------

    def caller(self, authorization: str | None) -> Caller:
        """Who calls, from the Authorization header alone. In `services`, an OIDC ID token of
        someone with a role in a tenant (or a platform admin); locally, anyone, for every model."""
        if not self.require_identity:
            return Caller(None, None)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAdmitted(
                401, "Authorization: a bearer OIDC ID token is required", "no bearer token"
            )
        try:
            identity = verify_token(token.strip(), OidcSettings.from_env())
        except IdentityRefused as exc:
            # Named by its kind only: PyJWT's messages may quote the token (its key id).
            kind = type(exc.__cause__).__name__ if exc.__cause__ else exc.rule
            raise NotAdmitted(
                401, f"Authorization: the ID token was refused ({kind})", f"token refused ({kind})"
            ) from exc
        if identity.name in self.admins:
            return Caller(identity.name, None)
        member = frozenset(t for t, c in self.catalogs.items() if roles_of(identity.name, c))
        return Caller(identity.name, member)

    def admit(self, name: str, authorization: str | None, call: Call) -> Route:
        """The route of a request its caller may make, decided before its body is read. An
        unknown model and another tenant's model get the same 404, which lists only the models
        the caller may call; anonymous callers learn nothing. Refusals go to the service's log,
        never to a tenant's request log."""
        try:
            caller = self.caller(authorization)
            route = self.routes.get(name)
            if route is None or not caller.may_call(route):
                yours = [r.name for r in self.routes.values() if caller.may_call(r)]
                raise NotAdmitted(
                    404,
                    "model: no such model among those you may call"
                    + (f" ({', '.join(yours)})" if yours else ""),
                    f"{'an unknown model' if route is None else route.name} for "
                    f"{(caller.name or 'a local caller')[:200]}",
                )
        except NotAdmitted as exc:
            log.warning(f"request {call.request_id}: refused {exc.status}, {exc.reason}")
            raise
        return route

    def parse(self, route: Route, body: bytes) -> list[dict[str, str]]:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ServingError(400, f"body: not JSON ({exc})") from exc
        except RecursionError as exc:
            raise ServingError(400, "body: not JSON (nested too deeply)") from exc
        if not isinstance(payload, dict) or "entities" not in payload:
            raise ServingError(422, 'body: expected {"entities": [{...}, ...]}')
        entities = payload["entities"]
        if not isinstance(entities, list) or not entities:
            raise ServingError(422, "entities: expected a non-empty list of objects")
        if len(entities) > MAX_ENTITIES:
            raise ServingError(422, f"entities: at most {MAX_ENTITIES} per request")
        takes = f"model {route.name} takes {', '.join(route.entity_columns)}"
        for i, entity in enumerate(entities):
            if not isinstance(entity, dict):
                raise ServingError(422, f"entities[{i}]: expected an object")
            for key in route.entity_columns:
                if key not in entity:
                    raise ServingError(422, f"entities[{i}].{key}: missing ({takes})")
                if not isinstance(entity[key], str):
                    raise ServingError(
                        422,
                        f"entities[{i}].{key}: expected a string, got {type(entity[key]).__name__}",
                    )
                if len(entity[key]) > MAX_KEY_CHARS:
                    raise ServingError(
                        422, f"entities[{i}].{key}: longer than {MAX_KEY_CHARS} characters"
                    )
            if len(entity) > len(route.entity_columns):
                extra = len(entity) - len(route.entity_columns)
                raise ServingError(422, f"entities[{i}]: {extra} field(s) too many ({takes})")
        return entities

    def features(
        self, route: Route, entities: list[dict[str, str]]
    ) -> tuple[list[dict[str, float]], list[datetime | None]]:
        rows: list[dict[str, float]] = [{} for _ in entities]
        as_of: list[datetime | None] = [None] * len(entities)
        for view in route.views or []:
            keys = [e[view.join_key] for e in entities]
            for i, (ts, values) in enumerate(view.read(keys)):
                if values is None:
                    raise ServingError(
                        404,
                        f"entities[{i}].{view.join_key}: not in the online store of feature "
                        f"view {view.owner}/{view.name}",
                    )
                for feature in view.features:
                    value = values.get(feature)
                    if value is None:
                        raise ServingError(
                            409,
                            f"feature {view.name}:{feature} is missing from the online store "
                            f"for entities[{i}].{view.join_key} (materialize "
                            f"{view.owner}/online/{view.name})",
                        )
                    rows[i][feature] = as_float(value)
                if ts is not None and (as_of[i] is None or ts < as_of[i]):
                    as_of[i] = ts
        return rows, as_of

    def predict(self, route: Route, body: bytes, call: Call) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of an admitted request; logs it to its tenant's request log."""
        import numpy as np

        champion = None
        entities: list[dict[str, str]] = []
        try:
            entities = self.parse(route, body)
            champion = route.serving
            if champion is None:
                raise ServingError(
                    503,
                    route.problem or f"model {route.name} has no champion yet (promote a version)",
                )
            rows, as_of = self.features(route, entities)
            matrix = np.array([[r[c] for c in champion.columns] for r in rows], dtype=np.float64)
            scores = champion.scorer.predict(matrix).tolist()
        except ServingError as exc:
            self.log_error(route, call, exc, champion)
            return exc.status, {"detail": exc.detail}
        known = [t for t in as_of if t is not None]
        oldest = min(known) if known else None
        request = {
            "request_id": call.request_id,
            "ts": call.received,
            "tenant": route.tenant,
            "model": route.model,
            "model_version": champion.version,
            "status": 200,
            "error": None,
            "latency_ms": call.latency_ms(),
        }
        self.request_log.record(
            route.schema,
            [
                {
                    **request,
                    "prediction": score,
                    "features_as_of": ts,
                    **{k: entity[k] for k in route.entity_columns},
                    **row,
                }
                for entity, row, score, ts in zip(entities, rows, scores, as_of, strict=True)
            ],
        )
        return 200, {
            "predictions": scores,
            "model_version": champion.version,
            "features_as_of": oldest.isoformat() if oldest else None,
        }

    def log_error(
        self, route: Route, call: Call, exc: ServingError, champion: Champion | None = None
    ) -> None:
        """One row for an admitted request refused before scoring: no prediction, the error."""
        log.warning(f"request {call.request_id} to {route.name}: {exc.status} {exc.detail}")
        row = {
            "request_id": call.request_id,
            "ts": call.received,
            "tenant": route.tenant,
            "model": route.model,
            "model_version": champion.version if champion else None,
            "status": exc.status,
            "error": exc.detail,
            "latency_ms": call.latency_ms(),
        }
        self.request_log.record(route.schema, [row])

    def readiness(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Ready or not for anyone (a kubelet's probe carries no token); the models' states
        only for the models the caller may call, the platform's own problems only for callers
        of every model (locally, platform admins)."""
        try:
            caller: Caller | None = self.caller(authorization)
        except NotAdmitted:
            caller = None
        visible = [r for r in self.routes.values() if caller is not None and caller.may_call(r)]
        problems = [r.problem for r in visible if r.problem]
        request_log = None
        if caller is not None and caller.tenants is None:
            if self.refresh_error:
                problems.append(f"champion refresh failed: {self.refresh_error}")
            request_log, log_problems = self.request_log_state()
            problems += log_problems
        ready = self.refreshed_at is not None
        body = {
            "ready": ready,
            "champions_checked_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
            "models": {r.name: r.status() for r in visible},
            "problems": problems,
            **({"request_log": request_log} if request_log is not None else {}),
        }
        return (200 if ready else 503), body

    def request_log_state(self) -> tuple[dict[str, Any], list[str]]:
        """The spool's state as /readyz shows it, and its problems in words."""
        state = self.request_log.state()
        batches = sum(n for n, _ in state.spooled.values())
        size = sum(b for _, b in state.spooled.values())
        problems = []
        if state.last_error:
            problems.append(
                f"request log: {batches} batch(es) ({size} bytes) kept in the spool since "
                f"{state.oldest_spooled:%Y-%m-%d %H:%M:%S} UTC, the lake refused the last: "
                f"{state.last_error}"
                if state.oldest_spooled
                else f"request log: {state.last_error}"
            )
        dropped_here = self.request_log.spool.dropped_here
        if dropped_here:
            problems.append(
                f"request log: {dropped_here} row(s) dropped since the service started (the "
                f"spool's limit is {state.limit_bytes} bytes); see the service's log"
            )
        problems += [f"request log: spool file {m}" for m in state.set_aside]
        body = {
            "spool": str(self.request_log.spool.folder),
            "spooled_batches": batches,
            "spooled_bytes": size,
            "limit_bytes": state.limit_bytes,
            "oldest_spooled": state.oldest_spooled.isoformat() if state.oldest_spooled else None,
            "dropped_rows": sum(state.dropped.values()),
            "last_error": state.last_error,
        }
        return body, problems


def create_app(service: Service) -> "FastAPI":
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="mlplat serve", lifespan=lifespan)

    # `async def` on purpose: the online read and the prediction take well under a millisecond,
    # less than a hop to the thread pool would cost.
    # A refusal before the whole body is read closes the connection, so the server reads no
    # more of it (on a kept-alive connection it would read the rest to find the next request).
    def refused(exc: ServingError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status, headers={"connection": "close"}
        )

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request) -> JSONResponse:
        call = Call.now()
        try:
            route = service.admit(name, request.headers.get("authorization"), call)
        except NotAdmitted as exc:
            return refused(exc)
        try:
            body = await read_body(request)
        except ServingError as exc:
            service.log_error(route, call, exc)
            return refused(exc)
        status, payload = service.predict(route, body, call)
        return JSONResponse(payload, status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        status, body = service.readiness(request.headers.get("authorization"))
        return JSONResponse(body, status_code=status)

    return app


def head_capped_httptools() -> type:
    """uvicorn's httptools protocol with a cap on the request line and headers. httptools
    buffers a head of any size (a 150 MB header is 150 MB of memory); h11, whose buffer uvicorn
    caps (`h11_max_incomplete_event_size`), costs about half a millisecond more per request here.
    A head still incomplete after `MAX_HEADER_BYTES` gets uvicorn's own 400 and the connection
    is closed: the server holds at most the cap and one read of the socket."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadCappedHttpTools(HttpToolsProtocol):
        in_head = False
        head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.in_head, self.head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self.in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.in_head or self.transport.is_closing():
                return
            # Still in the head after this read: all of it was head (or, on a pipelined
            # connection, the end of the previous request: counted too, to be safe).
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEADER_BYTES:
                self.send_400_response(
                    f"request line and headers: larger than the limit of {MAX_HEADER_BYTES} bytes"
                )

    return HeadCappedHttpTools


def server(app: "FastAPI", host: str, port: int, log_level: str = "info") -> "uvicorn.Server":
    """uvicorn serving `app` as `mlplat serve` does: httptools with the head capped."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=head_capped_httptools(),
        access_log=False,
        log_level=log_level,
    )
    return uvicorn.Server(config)


@dataclass
class ServeSettings:
    champion_ttl: float = 5.0
    log_rows: int = 1000
    log_seconds: float = 5.0
    spool_dir: Path | None = None  # default: <data root>/serving-spool
    spool_bytes: int = DEFAULT_SPOOL_BYTES


def service_from_env(settings: ServeSettings, resources: dict[str, Any] | None = None) -> Service:
    """The service of this deployment (MLPLAT_ENV): its resources, governance database and, in
    `services`/`k8s`, the caller's verified identity on every request."""
    env = deployment()
    resources = resources or resources_for(env)

    def ready(resource):
        return resource.process_config_and_initialize()

    lake, feast, mlflow = (ready(resources[k]) for k in ("lake", "feast", "mlflow"))
    catalogs = {name: catalog for name, catalog in TenantCatalogs().items()}
    return Service(
        catalogs,
        feast,
        mlflow,
        open_store(),
        RequestLog(
            lake,
            Spool(settings.spool_dir or data_root() / SPOOL_FOLDER, settings.spool_bytes),
            settings.log_rows,
            settings.log_seconds,
        ),
        champion_ttl=settings.champion_ttl,
        require_identity=env != "local",
        admins=platform_admins(),
    )
