"""Who may do what in MLflow when it runs with its basic-auth app (services and k8s).

Only the platform's governance identity (an MLflow admin) moves aliases and writes registry
tags. Each tenant gets one MLflow user that can read everything (the server's
`default_permission = READ`), log runs to its own experiments (`<tenant>/<model>`, created here by
the governance identity so no tenant can squat another's name and granted EDIT), and only READ
its registered models (`<tenant>.<model>`, also created here, so no tenant holds MANAGE on one).

The platform's processes reach MLflow as the governance identity through MLflow's own
variables, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; tenant steps get their tenant's.
The services stack calls `write_auth_config` for the server and `configure_permissions` once it
is up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TIMEOUT_S = 30


class MlflowAuthError(RuntimeError):
    """The MLflow auth server refused a configuration call; names the call and its answer."""


def write_auth_config(path: Path, database_uri: str, admin_user: str) -> Path:
    """The basic-auth app's config (MLFLOW_AUTH_CONFIG_PATH): READ by default. The admin
    password is not written: the server takes it from MLFLOW_AUTH_ADMIN_PASSWORD on first start."""
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    return path


def _call(uri: str, auth: tuple[str, str], method: str, path: str, **kw) -> dict:
    import requests

    response = requests.request(method, uri.rstrip("/") + path, auth=auth, timeout=TIMEOUT_S, **kw)
    if response.status_code >= 400:
        raise MlflowAuthError(
            f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}"
        )
    return response.json() if response.content else {}


def configure_permissions(
    tracking_uri: str,
    admin_user: str,
    admin_password: str,
    tenants: Mapping[str, str],
    models: Mapping[str, list[str]] | None = None,
) -> None:
    """Create (or update) one MLflow user per tenant (`tenants`: user name == tenant -> password)
    and the tenants' experiments and registered models, with the permissions above. Idempotent:
    safe to run on every start of the stack."""
    from mlflow.server.auth.routes import CREATE_USER, GET_USER

    if models is None:
        from platform_assets.tenancy.catalog import load_all

        models = {name: sorted(c.models) for name, c in load_all().items()}
    admin = (admin_user, admin_password)
    _call(
        tracking_uri, admin, "GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1}
    )
    for tenant, password in sorted(tenants.items()):
        try:
            _call(tracking_uri, admin, "GET", GET_USER, params={"username": tenant})
        except MlflowAuthError:
            _call(
                tracking_uri,
                admin,
                "POST",
                CREATE_USER,
                json={"username": tenant, "password": password},
            )
        for model in models.get(tenant, []):
            experiment = _ensure_experiment(tracking_uri, admin, f"{tenant}/{model}")
            registered = f"{tenant}.{model}"
            _ensure_registered_model(tracking_uri, admin, registered)
            _grant(tracking_uri, admin, tenant, "experiment", experiment, "EDIT")
            _grant(tracking_uri, admin, tenant, "registered_model", registered, "READ")


def _grant(uri, admin, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Set `user`'s permission on a resource to exactly `permission` (replacing any other)."""
    from mlflow.server.auth.routes import GRANT_USER_PERMISSION, REVOKE_USER_PERMISSION

    body = {"username": user, "resource_type": resource_type, "resource_id": resource_id}
    try:
        _call(uri, admin, "POST", GRANT_USER_PERMISSION, json={**body, "permission": permission})
    except MlflowAuthError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
        _call(uri, admin, "POST", REVOKE_USER_PERMISSION, json=body)
        _call(uri, admin, "POST", GRANT_USER_PERMISSION, json={**body, "permission": permission})


def _ensure_experiment(uri: str, admin: tuple[str, str], name: str) -> str:
    try:
        found = _call(
            uri, admin, "GET", "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": name},
        )  # fmt: skip
        return found["experiment"]["experiment_id"]
    except MlflowAuthError as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
            raise
    return _call(uri, admin, "POST", "/api/2.0/mlflow/experiments/create", json={"name": name})[
        "experiment_id"
    ]


def _ensure_registered_model(uri: str, admin: tuple[str, str], name: str) -> None:
    try:
        _call(uri, admin, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})
    except MlflowAuthError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
