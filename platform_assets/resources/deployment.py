"""Resources per deployment, chosen by the value of MLPLAT_ENV (see env.py)."""

from __future__ import annotations

import os

import dagster as dg

from platform_assets.env import Deployment, data_root
from platform_assets.resources.feature_store import FeastResource
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.resources.pricing import PricingResource


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{name} must be set when MLPLAT_ENV is 'services' or 'k8s'")
    return value


def tracking_server() -> str:
    """The MLflow tracking server every client of a shared deployment talks to."""
    uri = _required("MLFLOW_TRACKING_URI")
    if not uri.startswith(("http://", "https://")):
        # A database URI would bypass the server: its authentication and its artifact proxy.
        raise ValueError(
            f"MLFLOW_TRACKING_URI={uri!r} must be an http(s):// tracking server when MLPLAT_ENV "
            "is 'services' or 'k8s'"
        )
    return uri


def check_dagster_storage_url() -> None:
    """MLPLAT_DAGSTER_PG_URL (read by the services dagster.yaml) must name the psycopg2 driver:
    dagster-postgres sends NOTIFY with a bound parameter, which psycopg 3, SQLAlchemy 2.1's
    driver for a bare postgresql://, rejects at the first event a run writes."""
    url = os.environ.get("MLPLAT_DAGSTER_PG_URL")
    if not url:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        driver = make_url(url).drivername
    except ArgumentError as exc:
        raise ValueError(f"MLPLAT_DAGSTER_PG_URL is not a database URL: {exc}") from exc
    if driver != "postgresql+psycopg2":
        raise ValueError(
            f"MLPLAT_DAGSTER_PG_URL uses the driver {driver!r}; Dagster's Postgres storage needs "
            "psycopg2: write it as postgresql+psycopg2://user:password@host:5432/database"
        )


def _s3_credentials() -> dict[str, dg.EnvVar]:
    """Static S3 keys, when the environment has them, as env var references (Dagster resolves
    them in the step; they never enter config or metadata); else the AWS chain (pod role)."""
    names = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}
    if not all(os.environ.get(n) for n in names.values()):
        return {}
    return {field: dg.EnvVar(name) for field, name in names.items()}


def resources_for(deployment: Deployment) -> dict[str, object]:
    if deployment == "local":
        # The embedded lake and artifacts live under the data root unless pointed elsewhere
        # (`MLPLAT_LAKE_URI=s3://bucket/lake`, `MLPLAT_MLFLOW_ARTIFACTS=s3://bucket/mlflow`).
        root = data_root()
        return {
            "lake": LakeResource(
                root=os.environ.get("MLPLAT_LAKE_URI") or str(root / "lake"), **_s3_credentials()
            ),
            "feast": FeastResource(root=str(root / "feast")),
            "mlflow": MlflowResource(
                tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                artifact_root=os.environ.get("MLPLAT_MLFLOW_ARTIFACTS")
                or str(root / "mlflow" / "artifacts"),
            ),
            "pricing": PricingResource(),
        }
    # services and k8s: Feast registry on Postgres, Redis online store, an MLflow tracking
    # server. Credentials stay in the environment: EnvVar is read in the step, never stored in
    # the definitions (MLflow reads MLFLOW_TRACKING_USERNAME/PASSWORD itself).
    for name in ("MLPLAT_REDIS", "MLPLAT_FEAST_REGISTRY_URL"):
        _required(name)
    check_dagster_storage_url()
    return {
        "lake": LakeResource(root=_required("MLPLAT_LAKE_URI"), **_s3_credentials()),
        "feast": FeastResource(
            registry_url=dg.EnvVar("MLPLAT_FEAST_REGISTRY_URL"),
            redis=dg.EnvVar("MLPLAT_REDIS"),  # Feast's form: host:port[,db=N][,password=...]
        ),
        # Tenant runs are logged as the tenant's MLflow user when the deployment gives the
        # folder of their 0600 password files (governance/mlflow_auth.py).
        "mlflow": MlflowResource(
            tracking_uri=tracking_server(),
            tenant_credentials=os.environ.get("MLPLAT_MLFLOW_TENANT_CREDENTIALS") or None,
        ),
        "pricing": PricingResource(
            catalog_path=os.environ.get("MLPLAT_PRICES", "") or PricingResource().catalog_path
        ),
    }
