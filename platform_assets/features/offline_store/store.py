"""AsofOfflineStore, the class Feast loads, and its config: historical retrieval and the pulls
that materialization reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.offline_store import (
    OfflineStore,
    RetrievalJob,
    RetrievalMetadata,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig

from platform_assets.features.offline_store.config import (
    _SRC_ROW,
    STORE_TYPE,
    OfflineStoreInputError,
)
from platform_assets.features.offline_store.connection import _connect
from platform_assets.features.offline_store.join import _historical_features
from platform_assets.features.offline_store.plan import (
    _entity_timestamp_column,
    _entity_timestamps,
    _plans,
)
from platform_assets.features.offline_store.retrieval import AsofRetrievalJob, _entityless_retrieval
from platform_assets.features.offline_store.sources import (
    _open_source,
    _q,
    _require_columns,
    _timestamp_sql,
    _utc_naive,
)


# The config lives beside the store: Feast finds the store class in the config class's module.
class AsofOfflineStoreConfig(FeastConfigBaseModel):
    """Offline store config; Feast finds it by appending `Config` to the store class path."""

    type: Literal["platform_assets.features.offline_store.AsofOfflineStore"] = STORE_TYPE
    threads: int | None = None
    """DuckDB worker threads; None uses every core. The result does not depend on it."""
    memory_limit: str | None = None
    """DuckDB memory limit such as '3GB'; None keeps DuckDB's default (80% of RAM). Feature
    values are read outside it, in row-group batches of at most _VALUES_BATCH_BYTES."""


class AsofOfflineStore(OfflineStore):
    """Point-in-time joins with DuckDB ASOF JOIN; see docs/point_in_time.md for the semantics."""

    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        view_names = [fv.projection.name_to_use() for fv in feature_views]
        cutoff = bool(kwargs.get("filter_by_created_timestamp"))
        if entity_df is None:
            return _entityless_retrieval(
                config,
                feature_views,
                feature_refs,
                registry,
                project,
                full_feature_names,
                cutoff,
                kwargs.get("start_date"),
                kwargs.get("end_date"),
            )
        if not isinstance(entity_df, pd.DataFrame):
            raise OfflineStoreInputError(
                f"AsofOfflineStore needs the entity rows as a pandas DataFrame for feature "
                f"view(s) {view_names}; got {type(entity_df).__name__} (SQL entity queries are "
                "not supported: the store reads parquet sources only)"
            )
        entity = pa.Table.from_pandas(entity_df, preserve_index=False)
        ts_column = _entity_timestamp_column(entity, view_names)
        # Validate everything now so a bad input fails at the call, before any work is done.
        _entity_timestamps(entity, ts_column, view_names)
        plans = _plans(
            config, feature_views, feature_refs, entity.column_names, full_feature_names, cutoff
        )
        # Arrow's min/max skip nulls and take a few ms where pandas' dropna took several.
        ts = entity.column(ts_column)
        bounds = pc.min_max(ts.cast(pa.timestamp("us", ts.type.tz), safe=False))
        min_ts, max_ts = bounds["min"].as_py(), bounds["max"].as_py()
        return AsofRetrievalJob(
            compute=lambda: _historical_features(config, entity, plans, ts_column, view_names),
            full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
                feature_refs, project, registry
            ),
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=[c for c in entity.column_names if c != ts_column],
                min_event_timestamp=min_ts,
                max_event_timestamp=max_ts,
            ),
            repo_path=config.repo_path,
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        return _pull(
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
            latest=True,
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        return _pull(
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
            latest=False,
        )


def _pull(
    config: RepoConfig,
    data_source: DataSource,
    join_key_columns: list[str],
    feature_name_columns: list[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
    latest: bool,
) -> RetrievalJob:
    """Rows of a source in [start, end] (inclusive), or only the latest row per join key.

    Columns come back under their source names, as Feast's materialization expects; the
    timestamp columns are UTC-aware.
    """
    source = _open_source(config, data_source, f"source {data_source.name!r}")
    columns = [*join_key_columns, *feature_name_columns, timestamp_field]
    if created_timestamp_column:
        columns.append(created_timestamp_column)
    _require_columns(source, columns)
    ts_sql = _timestamp_sql(source, timestamp_field)
    created_sql = (
        _timestamp_sql(source, created_timestamp_column) if created_timestamp_column else None
    )

    def compute() -> pa.Table:
        where = ["TRUE"]
        if start_date is not None:
            where.append(f"{ts_sql} >= TIMESTAMP '{_utc_naive(start_date).isoformat()}'")
        if end_date is not None:
            where.append(f"{ts_sql} <= TIMESTAMP '{_utc_naive(end_date).isoformat()}'")
        select = [_q(c) for c in [*join_key_columns, *feature_name_columns]]
        select.append(f"{ts_sql} AS {_q(timestamp_field)}")
        if created_timestamp_column:
            select.append(f"{created_sql} AS {_q(created_timestamp_column)}")
        if latest:
            order = [f"{ts_sql} DESC"]
            if created_sql:
                order.append(f"{created_sql} DESC NULLS LAST")
            order.append(f"{_SRC_ROW} DESC")
            partition = (
                f"PARTITION BY {', '.join(_q(c) for c in join_key_columns)} "
                if join_key_columns
                else ""
            )
            tail = f"QUALIFY row_number() OVER ({partition}ORDER BY {', '.join(order)}) = 1"
        else:
            tail = f"ORDER BY {_SRC_ROW}"
        with _connect(config) as con:
            src, _ = source.relation_sql(con, "source_table", columns)
            try:
                table = con.sql(
                    f"SELECT {', '.join(select)} FROM {src} WHERE {' AND '.join(where)} {tail}"
                ).to_arrow_table()
            except duckdb.Error as e:
                raise OfflineStoreInputError(f"{source.label}: read failed: {e}") from e
        for name in (timestamp_field, created_timestamp_column):
            if name:
                index = table.schema.get_field_index(name)
                utc = table.column(index).cast(pa.timestamp("us", tz="UTC"))
                table = table.set_column(index, name, utc)
        return table

    return AsofRetrievalJob(compute=compute)
