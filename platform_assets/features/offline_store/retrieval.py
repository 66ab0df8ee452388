"""The store's RetrievalJob (lazy, persisted as a saved dataset) and retrieval without an entity
frame (each entity's features as of end_date)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from feast.errors import SavedDatasetLocationAlreadyExists
from feast.feature_view import FeatureView
from feast.infra.offline_stores.file_source import FileSource, SavedDatasetFileStorage
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage

from platform_assets.features.offline_store.config import (
    DEFAULT_ENTITY_TIMESTAMP,
    STORE_TYPE,
    OfflineStoreInputError,
)
from platform_assets.features.offline_store.connection import _connect
from platform_assets.features.offline_store.join import _historical_features
from platform_assets.features.offline_store.plan import _plans, _ViewPlan
from platform_assets.features.offline_store.saved_datasets import (
    SAVED_DATASET_FILE,
    SAVED_DATASET_KEY,
    SavedDatasetDestinationNotOurs,
    _destination_state,
)
from platform_assets.features.offline_store.sources import (
    _epoch_us,
    _filesystem_and_path,
    _q,
    _timestamp_literal,
)


def _entityless_retrieval(
    config: RepoConfig,
    feature_views: list[FeatureView],
    feature_refs: list[str],
    registry: BaseRegistry,
    project: str,
    full_feature_names: bool,
    created_cutoff: bool,
    start_date: datetime | None,
    end_date: datetime | None,
) -> AsofRetrievalJob:
    """Retrieval without entity rows: per entity with a row in [start, end], its features as
    of end_date, from rows with event time in [start, end] (see docs/point_in_time.md)."""
    from feast.utils import compute_non_entity_date_range

    view_names = [fv.projection.name_to_use() for fv in feature_views]
    # Feast's own defaults: end is now, start is end minus the longest TTL (else 30 days).
    start, end = compute_non_entity_date_range(feature_views, start_date, end_date)
    if start > end:
        raise OfflineStoreInputError(
            f"entity-less retrieval of feature view(s) {view_names}: start_date "
            f"{start.isoformat()} is after end_date {end.isoformat()}"
        )
    key_sets = {
        view.projection.name_to_use(): tuple(
            view.projection.join_key_map.get(c.name, c.name) for c in view.entity_columns
        )
        for view in feature_views
    }
    keyed = {keys for keys in key_sets.values() if keys}
    if len(keyed) > 1:
        raise OfflineStoreInputError(
            f"entity-less retrieval needs feature views with the same join keys (or none); "
            f"got {key_sets}"
        )
    keys = list(next(iter(keyed), ()))
    ts_column = DEFAULT_ENTITY_TIMESTAMP
    if ts_column in keys:
        raise OfflineStoreInputError(
            f"entity-less retrieval of feature view(s) {view_names}: a join key is named "
            f"{ts_column!r}, the entity timestamp column"
        )
    plans = _plans(
        config, feature_views, feature_refs, [*keys, ts_column], full_feature_names, created_cutoff
    )
    since_us = _epoch_us(start)
    plans = [dataclasses.replace(plan, since_us=since_us) for plan in plans]
    start_us, end_us = since_us, _epoch_us(end)

    def compute() -> pa.Table:
        entity = _entity_keys_in_range(config, plans, keys, start_us, end_us)
        stamp = pa.array(np.full(entity.num_rows, end_us), pa.timestamp("us", tz="UTC"))
        entity = entity.append_column(ts_column, stamp)
        return _historical_features(config, entity, plans, ts_column, view_names)

    return AsofRetrievalJob(
        compute=compute,
        full_feature_names=full_feature_names,
        on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
            feature_refs, project, registry
        ),
        metadata=RetrievalMetadata(
            features=feature_refs, keys=keys, min_event_timestamp=start, max_event_timestamp=end
        ),
        repo_path=config.repo_path,
    )


def _entity_keys_in_range(
    config: RepoConfig, plans: list[_ViewPlan], keys: list[str], start_us: int, end_us: int
) -> pa.Table:
    """The distinct non-null join-key tuples with a row in [start, end] in any keyed view,
    sorted; one row without columns when no view has join keys."""
    if not keys:
        return pa.table({"__asof_one": [0]}).drop_columns(["__asof_one"])
    parts = []
    with _connect(config) as con:
        for i, plan in enumerate(plans):
            if not plan.source_keys:
                continue
            columns = [*plan.source_keys, plan.ts_column]
            src, _ = plan.source.relation_sql(con, f"source_{i}", columns)
            by_name = dict(zip(plan.entity_keys, plan.source_keys, strict=True))
            select = ", ".join(f"{_q(by_name[k])} AS {_q(k)}" for k in keys)
            not_null = " AND ".join(f"{_q(by_name[k])} IS NOT NULL" for k in keys)
            parts.append(
                f"SELECT {select} FROM {src} WHERE {not_null} AND {plan.ts_sql} BETWEEN "
                f"{_timestamp_literal(start_us)} AND {_timestamp_literal(end_us)}"
            )
        order = ", ".join(_q(k) for k in keys)
        try:
            return con.sql(
                f"SELECT DISTINCT * FROM ({' UNION ALL BY NAME '.join(parts)}) ORDER BY {order}"
            ).to_arrow_table()
        except duckdb.Error as e:
            labels = [plan.source.label for plan in plans]
            raise OfflineStoreInputError(
                f"entity-less retrieval: reading the join keys of {labels} failed: {e}"
            ) from e


class AsofRetrievalJob(RetrievalJob):
    """A retrieval whose work runs when the result is asked for."""

    def __init__(
        self,
        compute: Callable[[], pa.Table],
        full_feature_names: bool = False,
        on_demand_feature_views: list[OnDemandFeatureView] | None = None,
        metadata: RetrievalMetadata | None = None,
        repo_path: Path | str | None = None,
    ) -> None:
        self._compute = compute
        self._full_feature_names = full_feature_names
        self._on_demand_feature_views = on_demand_feature_views or []
        self._metadata = metadata
        self._repo_path = repo_path

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._on_demand_feature_views

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._compute()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._compute().to_pandas()

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        """Write the result as a saved dataset: to `<uri>` when it ends in `.parquet`, else
        into the directory `<uri>` as `data.parquet`. Only a destination that is absent, an
        empty directory, or a saved dataset this store wrote (with `allow_overwrite`) is
        written; the file replaces the old one in one rename, so nothing is half-written."""
        if not isinstance(storage, SavedDatasetFileStorage):
            raise OfflineStoreInputError(
                f"AsofOfflineStore persists to SavedDatasetFileStorage only, not "
                f"{type(storage).__name__}"
            )
        uri = storage.file_options.uri
        if self._repo_path is not None:
            uri = FileSource.get_uri_for_file_path(Path(self._repo_path), uri)
        fs, path = _filesystem_and_path(uri)
        path = path.rstrip("/")
        is_dir = not path.endswith(".parquet")
        target = f"{path}/{SAVED_DATASET_FILE}" if is_dir else path
        state = _destination_state(fs, path, is_dir)
        if state == "ours" and not allow_overwrite:
            raise SavedDatasetLocationAlreadyExists(location=uri)
        if state not in ("ours", "free"):
            raise SavedDatasetDestinationNotOurs(uri, state)
        table = self.to_arrow(timeout=timeout)
        marker = json.dumps({"store": STORE_TYPE, "features": self.metadata.features})
        metadata = {**(table.schema.metadata or {}), SAVED_DATASET_KEY: marker.encode()}
        table = table.replace_schema_metadata(metadata)
        parent = target.rsplit("/", 1)[0] if "/" in target else "."
        fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{target.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, tmp, filesystem=fs)
            fs.move(tmp, target)
        finally:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
