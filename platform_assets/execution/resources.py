"""Resources per deployment, chosen by the value of MLPLAT_ENV (see env.py)."""

from __future__ import annotations

import os

import dagster as dg

from platform_assets.cost.metering import PricingResource
from platform_assets.execution.env import Deployment, data_root
from resources.feature_store import FeastResource
from resources.lake import LakeResource
from resources.mlflow import MlflowResource


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{name} must be set when MLPLAT_ENV is 'services' or 'k8s'")
    return value


def _s3_credentials() -> dict[str, dg.EnvVar]:
    """Static S3 keys, when the environment has them, as env var references (Dagster resolves
    them in the step; they never enter config or metadata); else the AWS chain (pod role)."""
    names = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}
    if not all(os.environ.get(n) for n in names.values()):
        return {}
    return {field: dg.EnvVar(name) for field, name in names.items()}


def resources_for(deployment: Deployment) -> dict[str, object]:
    root = data_root()
    if deployment == "local":
        # The embedded lake and artifacts live under the data root unless pointed elsewhere
        # (`MLPLAT_LAKE_URI=s3://bucket/lake`, `MLPLAT_MLFLOW_ARTIFACTS=s3://bucket/mlflow`).
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
    # services and k8s: Postgres-backed Feast registry and MLflow, Redis online store.
    redis = _required("MLPLAT_REDIS")  # Feast's form: host:port[,db=N][,password=...]
    return {
        "lake": LakeResource(root=_required("MLPLAT_LAKE_URI"), **_s3_credentials()),
        "feast": FeastResource(
            root=str(root / "feast"),
            registry_url=_required("MLPLAT_FEAST_REGISTRY_URL"),
            online_store={"type": "redis", "connection_string": redis},
        ),
        "mlflow": MlflowResource(
            tracking_uri=_required("MLFLOW_TRACKING_URI"),
            artifact_root=_required("MLPLAT_MLFLOW_ARTIFACTS"),
        ),
        "pricing": PricingResource(
            catalog_path=os.environ.get("MLPLAT_PRICES", "") or PricingResource().catalog_path
        ),
    }
