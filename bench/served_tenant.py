"""A served tenant for the serving benchmark and tests: ridehail's real pipeline run in a temp
dir (lake, Feast, MLflow, Dagster home), its online store filled, and a champion set. The model
may be trained with another built-in algorithm than the demo's (in the temp copy only)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

    def set_champion(self, version: int) -> None:
        """Move the platform's champion (the state promotion writes) to `version`."""
        current = self.store.champions_all().get(REGISTERED)
        with self.store.engine.begin() as conn:
            assert self.store.set_champion(conn, REGISTERED, version, current, current)

    def entities(self, n: int) -> list[dict[str, str]]:
        """`n` (driver, zone) pairs that are in the online store."""
        lake = self.resources["lake"]
        labels = lake.read(TENANT, "sources", "driver_churn_labels").to_pandas()
        zones = set(lake.read(TENANT, "features", "zone_demand").to_pandas()["zone_id"])
        drivers = set(lake.read(TENANT, "features", "driver_stats").to_pandas()["driver_id"])
        pairs = labels[labels["driver_id"].isin(drivers) & labels["zone_id"].isin(zones)]
        pairs = pairs[["driver_id", "zone_id"]].drop_duplicates().head(n)
        return [{"driver_id": d, "zone_id": z} for d, z in pairs.itertuples(index=False)]


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
    store = open_store()
    try:
        served = Served(root, catalogs, resources, store)
        served.set_champion(1)
        yield served
    finally:
        store.dispose()
