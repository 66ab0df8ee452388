"""A served tenant for the serving benchmark and tests: ridehail's real pipeline run in a temp
dir (lake, Feast, MLflow, Dagster home), its online store filled, and a champion set. The model
may be trained with another built-in algorithm than the demo's (in the temp copy only)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
import yaml

from platform_assets.tenancy.catalog import TenantCatalog

DEMO_DEFS = Path(__file__).resolve().parents[1] / "platform_assets" / "defs"
TENANT, MODEL = "ridehail", "driver_churn"
REGISTERED = f"{TENANT}.{MODEL}"


@dataclass
class Served:
    root: Path
    catalogs: dict[str, TenantCatalog]
    resources: dict
    store: object  # GovernanceStore
    # version -> the artifact hash the platform recorded (the model materialization's metadata)
    artifacts: dict[int, str] = field(default_factory=dict)

    def set_champion(self, version: int) -> None:
        """Move the platform's champion to `version` (see `record_champion`)."""
        record_champion(self.store, REGISTERED, version, self.artifacts.get(version))

    def entities(self, n: int) -> list[dict[str, str]]:
        """`n` (driver, zone) pairs that are in the online store."""
        lake = self.resources["lake"]
        labels = lake.read(TENANT, "sources", "driver_churn_labels").to_pandas()
        zones = set(lake.read(TENANT, "features", "zone_demand").to_pandas()["zone_id"])
        drivers = set(lake.read(TENANT, "features", "driver_stats").to_pandas()["driver_id"])
        pairs = labels[labels["driver_id"].isin(drivers) & labels["zone_id"].isin(zones)]
        pairs = pairs[["driver_id", "zone_id"]].drop_duplicates().head(n)
        return [{"driver_id": d, "zone_id": z} for d, z in pairs.itertuples(index=False)]


def record_champion(store, registered: str, version: int, digest: str | None) -> None:
    """Make `version` the platform's champion of `registered` with the state promotion writes:
    the champion row and the approved production request whose evidence names the artifact hash
    the platform recorded for it."""
    import sqlalchemy as sa

    current = store.champions_all().get(registered)
    requests = store.requests
    with store.engine.begin() as conn:
        assert store.set_champion(conn, registered, version, current, current)
        conn.execute(
            requests.delete().where(
                sa.and_(requests.c.model == registered, requests.c.version == version)
            )
        )
        conn.execute(
            requests.insert().values(
                model=registered,
                version=version,
                environment="production",
                tenant=registered.split(".")[0],
                status="approved",
                required=0,
                roles="[]",
                launched_by="automation",
                created_at="2026-01-01T00:00:00+00:00",
                reason="set by a test or benchmark",
                evidence=json.dumps({"artifact_sha256": digest}),
            )
        )


def register_sklearn(mlflow, registered: str, pipeline, X) -> tuple[int, str]:
    """A fitted scikit-learn model logged (skops, the platform's allow-list) and registered as a
    version of `registered`, with the content hash the model step would record for it."""
    import mlflow as mlflow_lib

    from platform_assets.models.flavors import SKLEARN_TRUSTED_TYPES, record_logged

    tenant, model = registered.split(".")
    with mlflow_lib.start_run(experiment_id=mlflow.ensure_experiment(f"{tenant}/{model}")):
        info = mlflow_lib.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=registered,
            serialization_format="skops",
            skops_trusted_types=list(SKLEARN_TRUSTED_TYPES),
            pip_requirements=["scikit-learn"],
        )
    digest = record_logged(mlflow, info.model_id, pipeline, X, registered)
    return int(info.registered_model_version), digest


def artifact_folder(mlflow, registered: str, version: int) -> Path:
    """Where MLflow keeps version `version`'s files on this machine's artifact root: what
    someone with write access to the store could change behind the platform's back."""
    from urllib.parse import urlparse

    from platform_assets.models.artifacts import storage_uri

    return Path(urlparse(storage_uri(mlflow, registered, version)).path)


def use_algorithm(root: Path, algorithm: str, params: dict) -> None:
    """Train the tenant's copied model with `algorithm` and `params` instead of the demo's."""
    path = root / TENANT / "models" / MODEL / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["attributes"].update(algorithm=algorithm, params=params)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@contextmanager
def served_tenant(
    base: Path,
    mp: pytest.MonkeyPatch,
    redis: str | None = None,
    algorithm: tuple[str, dict] | None = None,
) -> Iterator[Served]:
    """`redis`: Feast's connection string of a Redis online store (else SQLite). `algorithm`:
    (name, params) the model is trained with instead of the demo's."""
    from platform_assets.composition.locations import tenant_parts
    from platform_assets.governance.workflow import open_store
    from platform_assets.resources.deployment import resources_for
    from platform_assets.resources.feature_store import FeastResource
    from platform_assets.tenancy.catalog import load_all
    from platform_assets.tenancy.runs import pipeline_job_name

    root = base / "defs"
    shutil.copytree(DEMO_DEFS / TENANT, root / TENANT)
    # The model its own code trains (in a sandbox) is not the one served here.
    shutil.rmtree(root / TENANT / "models" / "driver_churn_lgbm")
    if algorithm is not None:
        use_algorithm(root, *algorithm)
    (base / "home").mkdir()
    for name, value in {
        "MLPLAT_ENV": "local",
        "MLPLAT_DATA": str(base / "data"),
        "DAGSTER_HOME": str(base / "home"),
        "MLPLAT_DEFS_ROOT": str(root),
    }.items():
        mp.setenv(name, value)
    catalogs = load_all(root)
    resources = resources_for("local")
    if redis:
        resources["feast"] = FeastResource(root=resources["feast"].root, redis=redis)
    defs = dg.Definitions.merge(tenant_parts(catalogs), dg.Definitions(resources=resources))
    with dg.instance_for_test(temp_dir=str(base / "home")) as instance:
        job = defs.resolve_job_def(pipeline_job_name(TENANT))
        result = job.execute_in_process(instance=instance)
        assert result.success
        artifacts = {
            int(md["model_version"].value): md["artifact_sha256"].value
            for event in result.get_asset_materialization_events()
            if event.asset_key == dg.AssetKey([TENANT, "models", MODEL])
            for md in [event.materialization.metadata]
        }
    store = open_store()
    try:
        served = Served(root, catalogs, resources, store, artifacts)
        served.set_champion(1)
        yield served
    finally:
        store.dispose()
