"""Who may do what in MLflow when it runs with its basic-auth app (services and k8s).

Three kinds of MLflow user:
- the server's admin: only sets the others up (`configure_permissions`, run by the deployment);
  no platform process holds its password;
- the platform's governance identity (`mlplat-governance`, not an admin): MANAGE on every
  tenant's registered model, so it alone registers versions, moves aliases and writes registry
  tags (in MLflow, registering a version and moving an alias need the same EDIT right, so no
  identity that registers can be kept from moving `champion`);
- one user per tenant (user name == tenant name): reads everything (the server's
  `default_permission = READ`), logs runs to its own experiments (`<tenant>/<model>`, created
  here so no tenant can squat another's name, granted EDIT), and only READs its registered
  models (`<tenant>.<model>`, created here, so no tenant holds MANAGE on one).

The platform's processes reach MLflow as the governance identity through MLflow's own
variables, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. A tenant's training and
evaluation runs are logged as the tenant (`MlflowResource.run`), whose password is read from a
0600 file `<tenant credentials folder>/<tenant>` (`read_tenant_password`); a Kubernetes secret
mounted as a volume has that layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from platform_assets.resources.feature_store import write_private
from platform_assets.resources.mlflow import MlflowAuthError
from platform_assets.tenancy.catalog import load_all

TIMEOUT_S = 30
GOVERNANCE_USER = "mlplat-governance"


def write_auth_config(path: Path, database_uri: str, admin_user: str) -> Path:
    """The basic-auth app's config (MLFLOW_AUTH_CONFIG_PATH): READ by default. The admin
    password is not written: the server takes it from MLFLOW_AUTH_ADMIN_PASSWORD on first start.
    Mode 0600: `database_uri` may hold the auth database's password."""
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n",
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
    governance_password: str,
    tenants: Mapping[str, str],
    models: Mapping[str, list[str]] | None = None,
) -> None:
    """As the server's admin: create (or update) the governance user and one MLflow user per
    tenant (`tenants`: user name == tenant -> password), and the tenants' experiments and
    registered models, with the permissions above. Idempotent: safe to run on every start."""
    if models is None:
        models = {name: sorted(c.models) for name, c in load_all().items()}
    admin = (admin_user, admin_password)
    _call(
        tracking_uri, admin, "GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1}
    )
    _ensure_user(tracking_uri, admin, GOVERNANCE_USER, governance_password)
    for tenant, password in sorted(tenants.items()):
        if tenant == GOVERNANCE_USER or tenant == admin_user:
            raise MlflowAuthError(f"tenant name {tenant!r} is one of the platform's MLflow users")
        _ensure_user(tracking_uri, admin, tenant, password)
        for model in models.get(tenant, []):
            experiment = _ensure_experiment(tracking_uri, admin, f"{tenant}/{model}")
            registered = f"{tenant}.{model}"
            _ensure_registered_model(tracking_uri, admin, registered)
            _grant(tracking_uri, admin, tenant, "experiment", experiment, "EDIT")
            _grant(tracking_uri, admin, tenant, "registered_model", registered, "READ")
            _grant(tracking_uri, admin, GOVERNANCE_USER, "registered_model", registered, "MANAGE")


def _routes(*names: str) -> tuple[str, ...]:
    """The auth app's REST paths, from MLflow itself. Importing them imports MLflow's server
    package, whose FastAPI app warns that Starlette deprecates its WSGI middleware: a
    warning about the server's code, not ours, so it is kept out of the setup's output."""
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from mlflow.server.auth import routes

    return tuple(getattr(routes, name) for name in names)


def _ensure_user(uri: str, admin: tuple[str, str], user: str, password: str) -> None:
    """The user exists with exactly this password (a restarted stack may rotate it)."""
    CREATE_USER, GET_USER, UPDATE_USER_PASSWORD = _routes(
        "CREATE_USER", "GET_USER", "UPDATE_USER_PASSWORD"
    )

    try:
        _call(uri, admin, "GET", GET_USER, params={"username": user})
    except MlflowAuthError as exc:
        if "HTTP 404" not in str(exc) and "RESOURCE_DOES_NOT_EXIST" not in str(exc):
            raise
        _call(uri, admin, "POST", CREATE_USER, json={"username": user, "password": password})
        return
    _call(uri, admin, "PATCH", UPDATE_USER_PASSWORD, json={"username": user, "password": password})


def _grant(uri, admin, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Set `user`'s permission on a resource to exactly `permission` (replacing any other)."""
    GRANT_USER_PERMISSION, REVOKE_USER_PERMISSION = _routes(
        "GRANT_USER_PERMISSION", "REVOKE_USER_PERMISSION"
    )

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
