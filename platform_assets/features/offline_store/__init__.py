"""The exact point-in-time Feast offline store on DuckDB and Arrow (docs/point_in_time.md).

Feast finds it as `platform_assets.features.offline_store.AsofOfflineStore`; these are the names
the rest of the platform imports. Importing it loads feast, duckdb and pyarrow: steps only.
"""

from platform_assets.features.offline_store.store import (
    LAYOUT_KEY,
    LAYOUT_ROW_GROUP_ROWS,
    STORE_TYPE,
    AsofOfflineStore,
    AsofOfflineStoreConfig,
    OfflineStoreInputError,
    feature_store_yaml,
    layout_for_join,
    write_feature_table,
)

__all__ = [
    "LAYOUT_KEY",
    "LAYOUT_ROW_GROUP_ROWS",
    "STORE_TYPE",
    "AsofOfflineStore",
    "AsofOfflineStoreConfig",
    "OfflineStoreInputError",
    "feature_store_yaml",
    "layout_for_join",
    "write_feature_table",
]
