"""Feast, one project per tenant, each in its own repo folder holding only feature_store.yaml.

The repo folder has no Python, so `feast -c <repo>` never imports Dagster code; the feature
views are applied from the team YAML by the feature-set assets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import yaml

if TYPE_CHECKING:
    from feast import FeatureStore

ASOF_STORE = "platform_assets.features.offline_store.AsofOfflineStore"


class FeastResource(dg.ConfigurableResource):
    root: str
    offline_store_type: str = ASOF_STORE
    registry_url: str | None = None  # SQLAlchemy URL; a SQLite file per tenant when unset
    online_store: dict | None = None  # Feast online store config; SQLite per tenant when unset

    def repo(self, tenant: str) -> Path:
        repo = Path(self.root) / tenant
        repo.mkdir(parents=True, exist_ok=True)
        config = {
            "project": tenant,
            "provider": "local",
            # A SQL registry: feature-set steps of one tenant run in parallel processes and
            # each applies its own view; the file registry would lose concurrent updates.
            "registry": {
                "registry_type": "sql",
                "path": self.registry_url or f"sqlite:///{repo.resolve() / 'registry.db'}",
                "cache_ttl_seconds": 0,
                "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
            },
            "online_store": self.online_store
            or {"type": "sqlite", "path": str(repo.resolve() / "online.db")},
            "offline_store": {"type": self.offline_store_type},
            "entity_key_serialization_version": 3,
            # The offline store reads any entity time zone itself (see offline_store.py);
            # Feast's coercion would copy the entity frame and turn its times into UTC.
            "coerce_tz_aware": False,
        }
        text = yaml.safe_dump(config, sort_keys=False)
        path = repo / "feature_store.yaml"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return repo

    def store(self, tenant: str) -> FeatureStore:
        from feast import FeatureStore

        return FeatureStore(repo_path=str(self.repo(tenant)))
