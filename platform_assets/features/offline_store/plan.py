"""What a retrieval reads: the entity frame's timestamps, one plan per feature view (source,
columns, TTL), and the per-entity-row match the join returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from feast.errors import FeatureNameCollisionError
from feast.feature_view import FeatureView
from feast.repo_config import RepoConfig

from platform_assets.features.offline_store.config import (
    DEFAULT_ENTITY_TIMESTAMP,
    OfflineStoreInputError,
)
from platform_assets.features.offline_store.sources import (
    _open_source,
    _require_columns,
    _Source,
    _timestamp_sql,
)


def _entity_timestamp_column(entity: pa.Table, view_names: list[str]) -> str:
    if DEFAULT_ENTITY_TIMESTAMP in entity.column_names:
        return DEFAULT_ENTITY_TIMESTAMP
    candidates = [f.name for f in entity.schema if pa.types.is_timestamp(f.type)]
    if len(candidates) == 1:
        return candidates[0]
    raise OfflineStoreInputError(
        f"entity frame for feature view(s) {view_names}: no timestamp column; name it "
        f"{DEFAULT_ENTITY_TIMESTAMP!r} (found timestamp columns {candidates})"
    )


def _entity_timestamps(entity: pa.Table, column: str, view_names: list[str]) -> pa.Array:
    """The entity timestamps as naive UTC microseconds, truncating finer precision."""
    values = entity.column(column).combine_chunks()
    if not pa.types.is_timestamp(values.type):
        raise OfflineStoreInputError(
            f"entity frame for feature view(s) {view_names}: column {column!r} has type "
            f"{values.type}; a timestamp is required"
        )
    # Arrow stores aware timestamps as UTC instants, so dropping the zone keeps UTC values.
    return values.cast(pa.timestamp(values.type.unit)).cast(pa.timestamp("us"), safe=False)


@dataclass(frozen=True)
class _Entity:
    """The entity frame as registered in DuckDB (row id, timestamp, join keys) and its
    timestamps as numpy, which the rank probe and the TTL test use without a round trip."""

    table: pa.Table
    ts_us: np.ndarray  # int64 microseconds; meaningless where not valid
    ts_valid: np.ndarray  # bool


@dataclass(frozen=True)
class _ViewPlan:
    """What to read from one feature view's source and how it lines up with the entity frame."""

    name: str  # the view name used in feature refs (projection.name_to_use())
    source: _Source
    entity_keys: list[str]  # entity frame columns
    source_keys: list[str]  # matching source columns
    source_features: list[str]  # source columns, in request order
    output_names: list[str]  # output column per feature
    ts_column: str
    created_column: str | None
    ts_sql: str
    created_sql: str | None
    ttl_us: int  # 0 means no lower bound
    # Entity-less retrieval's start_date: no candidate has an earlier event time.
    since_us: int | None = None
    # filter_by_created_timestamp: a candidate must also have been created at or before T.
    created_cutoff: bool = False


def _plan_view(
    config: RepoConfig,
    view: FeatureView,
    feature_refs: list[str],
    entity_columns: list[str],
    full_feature_names: bool,
    created_cutoff: bool = False,
) -> _ViewPlan:
    name = view.projection.name_to_use()
    if view.batch_source is None:
        raise OfflineStoreInputError(f"feature view {name!r} has no batch source")
    source = _open_source(config, view.batch_source, f"feature view {name!r}")
    reverse = {v: k for k, v in view.batch_source.field_mapping.items()}

    entity_keys, source_keys = [], []
    for column in view.entity_columns:
        entity_key = view.projection.join_key_map.get(column.name, column.name)
        if entity_key not in entity_columns:
            raise OfflineStoreInputError(
                f"feature view {name!r}: the entity frame has no join key column "
                f"{entity_key!r} (it has {entity_columns})"
            )
        entity_keys.append(entity_key)
        source_keys.append(reverse.get(column.name, column.name))

    prefix = f"{name}:"
    features = [ref[len(prefix) :] for ref in feature_refs if ref.startswith(prefix)]
    base_name = view.projection.name_alias or view.name
    output_names = [f"{base_name}__{f}" if full_feature_names else f for f in features]
    source_features = [reverse.get(f, f) for f in features]

    batch = view.batch_source
    ts_column = reverse.get(batch.timestamp_field, batch.timestamp_field)
    created_column = batch.created_timestamp_column or None
    if created_column:
        created_column = reverse.get(created_column, created_column)
    declared = [*source_keys, *source_features, ts_column]
    if created_column:
        declared.append(created_column)
    _require_columns(source, declared)

    ttl = view.ttl if isinstance(view.ttl, timedelta) else timedelta(0)
    return _ViewPlan(
        name=name,
        source=source,
        entity_keys=entity_keys,
        source_keys=source_keys,
        source_features=source_features,
        output_names=output_names,
        ts_column=ts_column,
        created_column=created_column,
        ts_sql=_timestamp_sql(source, ts_column),
        created_sql=_timestamp_sql(source, created_column) if created_column else None,
        ttl_us=max(0, ttl // timedelta(microseconds=1)),
        # Feast leaves views without a created column unaffected by the cutoff.
        created_cutoff=created_cutoff and created_column is not None,
    )


class _Match(NamedTuple):
    """Per entity row (in entity order): the matched source row number, and whether a row
    matched within the TTL."""

    rows: np.ndarray
    found: np.ndarray


def _plans(
    config: RepoConfig,
    feature_views: list[FeatureView],
    feature_refs: list[str],
    entity_columns: list[str],
    full_feature_names: bool,
    created_cutoff: bool,
) -> list[_ViewPlan]:
    """One plan per view; raises Feast's FeatureNameCollisionError on clashing output names."""
    plans = [
        _plan_view(config, fv, feature_refs, entity_columns, full_feature_names, created_cutoff)
        for fv in feature_views
    ]
    seen = set(entity_columns)
    collisions = []
    for plan in plans:
        for output, ref_feature in zip(plan.output_names, plan.source_features, strict=True):
            if output in seen:
                collisions.append(f"{plan.name}:{ref_feature}")
            seen.add(output)
    if collisions:
        raise FeatureNameCollisionError(collisions, full_feature_names)
    return plans
