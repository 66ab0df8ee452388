"""A Feast offline store that does exact point-in-time joins with DuckDB's ASOF JOIN over parquet.

Select it in `feature_store.yaml` with
`offline_store: {type: platform_assets.features.offline_store.AsofOfflineStore}`; the exact
semantics are in docs/point_in_time.md. This package must not import dagster: Feast imports it.
Importing it loads feast, duckdb and pyarrow, so the platform imports it inside steps only.
"""

from platform_assets.features.offline_store.config import (
    STORE_TYPE,
    OfflineStoreInputError,
    feature_store_yaml,
)
from platform_assets.features.offline_store.layout import (
    LAYOUT_KEY,
    LAYOUT_ROW_GROUP_ROWS,
    layout_for_join,
    write_feature_table,
)
from platform_assets.features.offline_store.store import AsofOfflineStore, AsofOfflineStoreConfig

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
