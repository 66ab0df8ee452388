"""The UI gateway: the Dagster webserver behind an identity check (Dagster OSS has none).

Every request must carry a verified identity: the authenticating proxy's header, believed only
from MLPLAT_TRUSTED_PROXIES, or an OIDC ID token (`Authorization: Bearer <token>`). On a GraphQL
run launch the gateway replaces whatever `mlplat/` tags the client sent with the verified
launcher and a proof the platform signs over identity, job and run config (`identity.launch_tags`)
which is what the governance jobs and the four-eyes rule believe.

    uvicorn --factory platform_assets.governance.gateway:create_app --host 0.0.0.0 --port 3000
"""

from __future__ import annotations

import json
from typing import Any

from platform_assets.governance.identity import (
    RESERVED_PREFIX,
    IdentityRefused,
    OidcSettings,
    ProxySettings,
    launch_tags,
    proxy_identity,
    verify_token,
)


def _launches(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The executionParams of a GraphQL launch mutation (single or multiple runs)."""
    variables = params.get("variables") or {}
    if isinstance(variables.get("executionParams"), dict):
        return [variables["executionParams"]]
    return [p for p in variables.get("executionParamsList") or [] if isinstance(p, dict)]


def sign_launches(body: bytes, identity, keys) -> bytes:
    """Rewrite launch mutations in a GraphQL request body; other requests pass unchanged."""
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
        for params in _launches(op):
            selector = params.get("selector") or {}
            job = selector.get("jobName") or selector.get("pipelineName") or ""
            config = params.get("runConfigData") or {}
            if isinstance(config, str):
                config = yaml.safe_load(config) or {}
            meta = params.setdefault("executionMetadata", {})
            tags = [
                t
                for t in meta.get("tags") or []
                if not str(t.get("key", "")).startswith(RESERVED_PREFIX)
            ]
            signed = launch_tags(keys, identity, job, config)
            meta["tags"] = tags + [{"key": k, "value": v} for k, v in signed.items()]
            changed = True
    return json.dumps(payload).encode() if changed else body


class IdentityGateway:
    """ASGI middleware: refuse requests without a verified identity; sign run launches."""

    def __init__(self, app, keys, proxy: ProxySettings, oidc: OidcSettings | None):
        self.app, self.keys, self.proxy, self.oidc = app, keys, proxy, oidc

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
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 4401})
            return await _refuse(send, 403 if exc.rule != "no-identity" else 401, str(exc))
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith("/graphql")
        ):
            body = await _read(receive)
            body = sign_launches(body, identity, self.keys)
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
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


def create_app():
    """The Dagster webserver for workspace.yaml, behind the gateway (settings from the env)."""
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.app import create_app_from_workspace_process_context

    from platform_assets.execution.env import repo_root
    from platform_assets.governance.keys import audit_keys

    context = WorkspaceProcessContext(
        DagsterInstance.get(), WorkspaceFileTarget([str(repo_root() / "workspace.yaml")])
    )
    app = create_app_from_workspace_process_context(context)
    return IdentityGateway(app, audit_keys(), ProxySettings.from_env(), OidcSettings.from_env())
