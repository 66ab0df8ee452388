"""Feast's universal offline-store tests against AsofOfflineStore: the store's repo configuration.

Like Feast's own stores' `<store>_repo_configuration.py`, it gives `FULL_REPO_CONFIGS` to Feast's
test suite (sdk/python/tests of feast-dev/feast, never vendored here) through its documented hook
`FULL_REPO_CONFIGS_MODULE=platform_assets.features.offline_store.repo_configuration`;
`scripts/feast_universal/run.sh` shows the whole invocation. It imports Feast's test tree, so it
loads only there; nothing in the platform imports it. Feast's `FileDataSourceCreator` writes the
parquet sources and saved dataset destinations; only the offline store config it hands out is ours.
"""

import tests.universal.feature_repos.repo_configuration as feast_repo_configuration
from tests.universal.feature_repos.integration_test_repo_config import (
    IntegrationTestRepoConfig,
)
from tests.universal.feature_repos.universal.data_sources.file import FileDataSourceCreator

from platform_assets.features.offline_store.store import AsofOfflineStoreConfig


class AsofFileDataSourceCreator(FileDataSourceCreator):
    """Feast's file data sources, read by AsofOfflineStore instead of Feast's dask store."""

    def create_offline_store_config(self) -> AsofOfflineStoreConfig:
        return AsofOfflineStoreConfig()


FULL_REPO_CONFIGS = [
    IntegrationTestRepoConfig(provider="local", offline_store_creator=AsofFileDataSourceCreator)
]

# Tests marked `universal_offline_stores(only=["file"])` pick their store from this table, not
# from FULL_REPO_CONFIGS; "file" names the parquet-FileSource store, which ours is. This module
# is imported while Feast's repo_configuration runs, after the table is defined.
feast_repo_configuration.OFFLINE_STORE_TO_PROVIDER_CONFIG["file"] = (
    "local",
    AsofFileDataSourceCreator,
)
