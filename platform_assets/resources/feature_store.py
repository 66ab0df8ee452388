"""Feast, one project per tenant, each in its own repo folder holding only feature_store.yaml.

The repo folder has no Python, so `feast -c <repo>` never imports Dagster code; the feature
views are applied from the team YAML by the feature-set assets.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import yaml

from platform_assets.resources.first_use import creation_lock

if TYPE_CHECKING:
    from feast import FeatureStore

ASOF_STORE = "platform_assets.features.offline_store.AsofOfflineStore"


class FeastResource(dg.ConfigurableResource):
    """`registry_url` and `redis` carry credentials: pass them as `dg.EnvVar`, so they are read
    in the step and never stored in the definitions' config."""

    root: str | None = None  # None: this process's temp dir (the repo is only generated config)
    offline_store_type: str = ASOF_STORE
    registry_url: str | None = None  # SQLAlchemy URL; a SQLite file per tenant when unset
    redis: str | None = None  # Feast's form, host:port[,db=N][,password=...]; else SQLite

    def repo(self, tenant: str) -> Path:
        root = Path(self.root or Path(tempfile.gettempdir()) / f"mlplat-feast-{os.getuid()}")
        repo = root / tenant
        repo.mkdir(parents=True, exist_ok=True)
        online = (
            {"type": "redis", "connection_string": self.redis}
            if self.redis
            else {"type": "sqlite", "path": str(repo.resolve() / "online.db")}
        )
        config = {
            "project": tenant,
            "provider": "local",
            # A SQL registry: feature-set steps of one tenant run in parallel processes and
            # each applies its own view; the file registry would lose concurrent updates.
            "registry": {
                "registry_type": "sql",
                "path": self.registry_path(repo),
                # The tables are made once by `create_registry_tables`, under a lock; a step's
                # registry only checks that they are there.
                "schema_mode": "verify",
                "cache_ttl_seconds": 0,
                "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
            },
            "online_store": online,
            "offline_store": {"type": self.offline_store_type},
            "entity_key_serialization_version": 3,
            # The offline store reads any entity time zone itself (see offline_store.py);
            # Feast's coercion would copy the entity frame and turn its times into UTC.
            "coerce_tz_aware": False,
        }
        write_private(repo / "feature_store.yaml", yaml.safe_dump(config, sort_keys=False))
        return repo

    def registry_path(self, repo: Path) -> str:
        return self.registry_url or f"sqlite:///{repo.resolve() / 'registry.db'}"

    def store(self, tenant: str) -> FeatureStore:
        from feast import FeatureStore

        repo = self.repo(tenant)
        create_registry_tables(self.registry_path(repo))
        return FeatureStore(repo_path=str(repo))


def create_registry_tables(url: str) -> None:
    """Create Feast's SQL registry tables in the database at `url` unless they are all there:
    what `feast registry create-schema` does, under the creation lock. Left to Feast, every
    step of a run creates them on a new database (checking, then creating), and parallel steps
    race: `table data_sources already exists`."""
    import sqlalchemy as sa
    from feast.infra.registry.sql import metadata
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        if set(metadata.tables) - set(sa.inspect(engine).get_table_names()):
            with creation_lock(url, "feast registry"):
                metadata.create_all(engine)  # checks again, under the lock
    finally:
        engine.dispose()


def apply(store: FeatureStore, objects: list[Any]) -> None:
    """`store.apply(objects)` under the registry's lock. Feast's SQL registry writes each object,
    and a project's metadata on its first write, by checking and then inserting: two steps of a
    run applying their views with the same entity race (`UNIQUE constraint failed`), so writes
    to one registry take turns, as its creation does."""
    with creation_lock(store.config.registry.path, "feast registry"):
        store.apply(objects)


def write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only (it may hold credentials), atomically."""
    if path.exists() and path.read_text() == text and path.stat().st_mode & 0o077 == 0:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
