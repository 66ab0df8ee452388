"""The UI gateway: the Dagster webserver behind an identity check (Dagster OSS has none).

Every request must carry a verified identity: the authenticating proxy's header, believed only
from MLPLAT_TRUSTED_PROXIES, or an OIDC ID token (`Authorization: Bearer <token>`). A credential
that fails (bad token, reserved identity, a header from an untrusted address) is refused and
recorded in the platform's audit chain. On a GraphQL run launch the gateway replaces whatever
`mlplat/` tags the client sent with the verified launcher and a proof the platform signs over
identity, job and run config, or for a re-execution its parent run (`identity.launch_tags`),
which is what the governance jobs and the four-eyes rule believe; mutations are accepted only as
JSON POST bodies, where it can do so.

What the identity may do is Dagster's own permission model, set per request
(`RoleWorkspaceContext`): platform admins everything; anyone else read-only, except on the code
locations all of whose tenants give them `approver` or `admin` (launch, terminate, report events,
sensors and schedules there). A viewer, or a person of another tenant, gets Dagster's
`UnauthorizedError` for a mutation, and the UI hides what they may not do.

    uvicorn --factory platform_assets.governance.gateway:create_app --host 0.0.0.0 --port 3000
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from platform_assets.env import repo_root
from platform_assets.governance import rbac, service
from platform_assets.governance.heads import head_file
from platform_assets.governance.identity import (
    RESERVED_PREFIX,
    Identity,
    IdentityRefused,
    OidcSettings,
    ProxySettings,
    header_value,
    launch_tags,
    proxy_identity,
    unverified_claim,
    verify_token,
)
from platform_assets.governance.keys import audit_keys
from platform_assets.governance.rbac import roles_of
from platform_assets.governance.workflow import Governance, TenantCatalogs, open_store
from platform_assets.tenancy.locations import code_locations

# Where the gateway leaves the verified identity for the webserver's request context.
SCOPE_KEY = "mlplat.identity"
WRITE_ROLES = ("approver", "admin")
# (refusal, what the caller claimed, request details) -> None; runs in a worker thread.
Recorder = Callable[[IdentityRefused, str, dict[str, Any]], None]


# Arguments that carry run launches' tags, whatever the client named its variables: launches and
# re-executions are signed, backfills (launched by the daemon) stripped of the platform's tags.
LAUNCH_ARGS = ("executionParams", "executionParamsList")
REEXECUTION_ARGS = ("reexecutionParams",)
TAG_ARGS = ("backfillParams",)


class LaunchRefused(ValueError):
    """A launch whose parameters the gateway cannot sign (written inline in the document)."""


def _mutation_args(query: str) -> list[tuple[str, str, Any]]:
    """(field, argument, value node) of every argument of every mutation field in `query`."""
    import graphql

    try:
        document = graphql.parse(query)
    except graphql.GraphQLError:
        return []  # Dagster cannot execute it either
    out = []
    for definition in document.definitions:
        if getattr(definition, "operation", None) != graphql.language.OperationType.MUTATION:
            continue
        for selection in definition.selection_set.selections:
            if not isinstance(selection, graphql.language.FieldNode):
                raise LaunchRefused(
                    "a mutation's top-level selections must be fields (no fragments), so the "
                    "gateway can see every launch"
                )
            for arg in selection.arguments or ():
                out.append((selection.name.value, arg.name.value, arg.value))
    return out


def _launches(op: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The parameters of one GraphQL operation's launches, re-executions (by parent run id) and
    backfills, read through the document: the variables its launch arguments name."""
    import graphql

    found: dict[str, list[dict[str, Any]]] = {"launch": [], "reexecution": [], "backfill": []}
    variables = op.get("variables") or {}
    if not isinstance(variables, dict):
        return found
    kinds = {
        **dict.fromkeys(LAUNCH_ARGS, "launch"),
        **dict.fromkeys(REEXECUTION_ARGS, "reexecution"),
        **dict.fromkeys(TAG_ARGS, "backfill"),
    }
    for field, name, node in _mutation_args(str(op.get("query") or "")):
        if name not in kinds:
            continue
        if not isinstance(node, graphql.language.VariableNode):
            raise LaunchRefused(
                f"{field}: pass {name} as a GraphQL variable, not inline, so the gateway can "
                "sign the launch with the verified launcher"
            )
        value = variables.get(node.name.value)
        params = value if isinstance(value, list) else [value]
        found[kinds[name]].extend(p for p in params if isinstance(p, dict))
    return found


def _without_platform_tags(tags) -> list:
    return [t for t in tags or [] if not str(t.get("key", "")).startswith(RESERVED_PREFIX)]


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def sign_launches(body: bytes, identity, keys) -> bytes:
    """Rewrite launch mutations in a GraphQL request body; other requests pass unchanged.
    LaunchRefused when a launch's parameters are not variables the gateway can rewrite."""
    import yaml

    try:
        payload = json.loads(body or b"null")
    except json.JSONDecodeError:
        return body
    operations = payload if isinstance(payload, list) else [payload]
    changed = False
    for op in operations:
        if not isinstance(op, dict):
            continue
        found = _launches(op)
        for params in found["backfill"]:
            for key in ("extraTags", "tags"):
                if key in params:
                    params[key] = _without_platform_tags(params[key])
                    changed = True
        for params in found["reexecution"]:
            # The extra tags win over those Dagster copies from the parent run.
            signed = launch_tags(keys, identity, "", {}, str(params.get("parentRunId") or ""))
            params["extraTags"] = _without_platform_tags(params.get("extraTags")) + _tag_list(
                signed
            )
            changed = True
        for params in found["launch"]:
            selector = params.get("selector") or {}
            job = selector.get("jobName") or selector.get("pipelineName") or ""
            config = params.get("runConfigData") or {}
            if isinstance(config, str):
                config = yaml.safe_load(config) or {}
            meta = params.setdefault("executionMetadata", {})
            parent = str(meta.get("parentRunId") or "")
            tags = _without_platform_tags(meta.get("tags"))
            meta["tags"] = tags + _tag_list(launch_tags(keys, identity, job, config, parent))
            changed = True
    return json.dumps(payload).encode() if changed else body


def mutation_outside_json(scope, body: bytes) -> bool:
    """Does a GraphQL request carried in the query string or as `application/graphql` hold a
    mutation? Dagster executes those too, but the gateway signs launches only in JSON bodies."""
    from urllib.parse import parse_qs

    import graphql

    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if scope["method"] == "POST" and "application/json" in headers.get("content-type", ""):
        return False
    if scope["method"] == "POST" and "application/graphql" in headers.get("content-type", ""):
        query = body.decode("utf-8", "replace")
    else:
        query = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("query") or [""])[0]
    if not query:
        return False
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError:
        return False  # Dagster cannot execute it either
    return any(
        getattr(d, "operation", None) == graphql.language.OperationType.MUTATION
        for d in document.definitions
    )


class IdentityGateway:
    """ASGI middleware: refuse requests without a verified identity (recording refused
    credentials); sign run launches; hand the identity to the webserver's request context."""

    def __init__(
        self,
        app,
        keys,
        proxy: ProxySettings,
        oidc: OidcSettings | None,
        recorder: Recorder | None = None,
    ):
        self.app, self.keys, self.proxy, self.oidc = app, keys, proxy, oidc
        self.recorder = recorder

    def claimed(self, scope) -> str:
        """What the caller said it is, unverified: for the record of a refusal only."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        said = []
        value = header_value(headers, self.proxy.header)
        if value is not None:
            said.append(f"header {self.proxy.header}={value.strip()[:200]}")
        auth = header_value(headers, "authorization") or ""
        if auth.lower().startswith("bearer "):
            said.append(f"token={unverified_claim(auth[7:].strip())}")
        return ", ".join(said)

    async def record(self, exc: IdentityRefused, scope) -> None:
        if self.recorder is None or exc.rule == "no-identity":
            return  # nothing was presented: no claim to record
        import anyio

        details = {
            "client": (scope.get("client") or ("",))[0],
            "path": scope.get("path", ""),
            "method": scope.get("method", "websocket"),
        }
        await anyio.to_thread.run_sync(self.recorder, exc, self.claimed(scope), details)

    def identify(self, scope) -> Any:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = (scope.get("client") or (None,))[0]
        identity = proxy_identity(headers, client, self.proxy)
        if identity is not None:
            return identity
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if auth.lower().startswith("bearer "):
            return verify_token(auth[7:].strip(), self.oidc)
        raise IdentityRefused(
            "no-identity",
            "no verified identity: come through the authenticating proxy or send "
            "Authorization: Bearer <OIDC ID token>",
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        try:
            identity = self.identify(scope)
        except IdentityRefused as exc:
            await self.record(exc, scope)
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 4401})
            return await _refuse(send, 403 if exc.rule != "no-identity" else 401, str(exc))
        scope = {**scope, SCOPE_KEY: identity}
        if scope["type"] == "http" and scope["path"].endswith("/graphql"):
            body = await _read(receive) if scope["method"] == "POST" else b""
            if mutation_outside_json(scope, body):
                return await _refuse(
                    send,
                    400,
                    "GraphQL mutations are accepted only as a POST with an application/json "
                    "body, where the gateway signs run launches with the verified launcher",
                )
            if scope["method"] == "POST":
                try:
                    body = sign_launches(body, identity, self.keys)
                except LaunchRefused as exc:
                    return await _refuse(send, 400, str(exc))
                headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
                length = (b"content-length", str(len(body)).encode())
                scope = {**scope, "headers": [*headers, length]}
                receive = _replay(body)
        return await self.app(scope, receive, send)


async def _read(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _refuse(send, status: int, message: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": message.encode()})


def write_access(
    identity: Identity | None, locations, catalogs: Mapping, admins: list[str]
) -> tuple[bool, dict[str, bool]]:
    """(read-only everywhere else, read-only per code location) for this identity: platform
    admins may do anything; others may change only the locations all of whose tenants give them
    a write role. The platform's own location (sensors, governance jobs) is its admins' alone;
    tenants' approvers act on their models through `mlplat promote|approve|rollback`."""
    if identity is None:
        return True, {}
    if identity.name in admins:
        return False, {}

    def writer(tenant: str) -> bool:
        try:
            catalog = catalogs[tenant]
        except (KeyError, ValueError, OSError):
            return False
        return any(r in WRITE_ROLES for r in roles_of(identity.name, catalog))

    return True, {
        loc.name: not (loc.tenants and all(writer(t) for t in loc.tenants)) for loc in locations
    }


def role_workspace_context(instance, target, catalogs=None, admins=None, locations=None):
    """A `WorkspaceProcessContext` whose request contexts carry the permissions of the identity
    the gateway verified (Dagster's own permission checks then refuse what they may not do)."""
    from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext

    catalogs = catalogs if catalogs is not None else TenantCatalogs()
    admins = admins if admins is not None else rbac.platform_admins()
    locations = locations if locations is not None else code_locations()

    class RoleWorkspaceContext(WorkspaceProcessContext):
        def create_request_context(self, source: object | None = None) -> WorkspaceRequestContext:
            scope = getattr(source, "scope", None) or {}
            read_only, per_location = write_access(
                scope.get(SCOPE_KEY), locations, catalogs, admins
            )
            return WorkspaceRequestContext(
                instance=self._instance,
                current_workspace=self.get_current_workspace(),
                process_context=self,
                version=self.version,
                source=source,
                read_only=read_only,
                read_only_locations=per_location,
            )

    return RoleWorkspaceContext(instance, target)


def record_refusal(exc: IdentityRefused, claimed: str, details: dict[str, Any]) -> None:
    """A refused credential, into the platform's audit chain (the gateway knows no model)."""
    instance = service.dagster_instance()
    gov = Governance(
        open_store(),
        None,
        instance,
        emit=instance.report_runless_asset_event,
        head_file=head_file(),
    )
    try:
        gov.refuse_identity(exc, "ui_request", via="gateway", claimed=claimed, details=details)
    finally:
        gov.close()


def create_app():
    """The Dagster webserver for the workspace (DAGSTER_WORKSPACE_FILE, by default the repo's
    workspace.yaml), behind the gateway (settings from the env)."""
    import os

    from dagster import DagsterInstance
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.app import create_app_from_workspace_process_context

    workspace = os.environ.get("DAGSTER_WORKSPACE_FILE") or str(repo_root() / "workspace.yaml")
    context = role_workspace_context(DagsterInstance.get(), WorkspaceFileTarget([workspace]))
    app = create_app_from_workspace_process_context(context)
    return IdentityGateway(
        app, audit_keys(), ProxySettings.from_env(), OidcSettings.from_env(), record_refusal
    )
