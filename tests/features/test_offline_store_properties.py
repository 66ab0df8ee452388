"""Property tests: AsofOfflineStore against a brute-force point-in-time join on random tables.

The tables are small and dense with ties (few keys, a coarse time grid, repeated created times)
and three views differ in entities, TTL and timestamp storage, so every rule gets exercised.
One FeatureStore serves all examples; each example rewrites the parquet files it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from platform_assets.features.offline_store import (
    AsofOfflineStore,
    feature_store_yaml,
    join,
    layout_for_join,
    write_feature_table,
)

T0 = datetime(2024, 3, 1)
SLOT = timedelta(minutes=30)
US = timedelta(microseconds=1)


@dataclass(frozen=True)
class ViewSpec:
    name: str
    keys: tuple[str, ...]
    ttl: timedelta | None
    has_created: bool
    unit: str  # how the source stores its timestamps
    tz: str | None


VIEWS = (
    ViewSpec("a", ("driver_id",), timedelta(minutes=60), True, "us", None),
    ViewSpec("b", ("driver_id", "city"), None, False, "ns", None),
    ViewSpec("c", ("city",), timedelta(0), True, "us", "UTC"),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FeatureStore, Path]]:
    root = tmp_path_factory.mktemp("pit_properties")
    text = feature_store_yaml("props", root, root / "registry.db", root / "online.db")
    (root / "feature_store.yaml").write_text(text)
    entities = {
        "driver_id": Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64),
        "city": Entity(name="city", join_keys=["city"], value_type=ValueType.INT64),
    }
    objects: list = list(entities.values())
    for spec in VIEWS:
        write_source(root, spec, [])
        objects.append(
            FeatureView(
                name=spec.name,
                entities=[entities[k] for k in spec.keys],
                ttl=spec.ttl,
                schema=[
                    *(Field(name=k, dtype=Int64) for k in spec.keys),
                    Field(name="value", dtype=Int64),
                ],
                source=FileSource(
                    name=f"{spec.name}_source",
                    path=str(root / f"{spec.name}.parquet"),
                    timestamp_field="event_timestamp",
                    created_timestamp_column="created" if spec.has_created else "",
                ),
            )
        )
    feature_store = FeatureStore(repo_path=str(root))
    feature_store.apply(objects)
    yield feature_store, root


Row = tuple[int | None, int | None, int, int | None, int | None]  # driver, city, slot, created, v


def write_source(root: Path, spec: ViewSpec, rows: list[Row], layout: str = "plain") -> None:
    """Write a view's rows: as given ("plain"), laid out for the join by the platform's writer
    in row groups of 4 rows ("ours"), or as given but claiming that layout ("false-claim",
    as a file rewritten from one of ours with its metadata kept)."""
    ts_type = pa.timestamp(spec.unit, tz=spec.tz)
    columns: dict[str, pa.Array] = {}
    for i, key in enumerate(("driver_id", "city")):
        if key in spec.keys:
            columns[key] = pa.array([r[i] for r in rows], pa.int64())
    columns["event_timestamp"] = pa.array([T0 + r[2] * SLOT for r in rows], ts_type)
    if spec.has_created:
        created = [None if r[3] is None else T0 + r[3] * SLOT for r in rows]
        columns["created"] = pa.array(created, ts_type)
    columns["value"] = pa.array([r[4] for r in rows], pa.int64())
    table, path = pa.table(columns), root / f"{spec.name}.parquet"
    created = "created" if spec.has_created else None
    if layout == "ours":
        write_feature_table(table, path, list(spec.keys), "event_timestamp", created, 4)
        return
    if layout == "false-claim":
        claimed = layout_for_join(table, list(spec.keys), "event_timestamp", created)
        table = table.replace_schema_metadata(claimed.schema.metadata)
    pq.write_table(table, path, row_group_size=4)


def reference(spec: ViewSpec, rows: list[Row], entity: tuple, cutoff: bool = False) -> int | None:
    """Brute force: same keys, ts <= T, ts >= T - TTL when TTL > 0, created <= T with the
    created-time cutoff (when the view has a created column), then the max tie-break."""
    driver, city, when = entity
    wanted = {"driver_id": driver, "city": city}
    if any(wanted[k] is None for k in spec.keys):
        return None
    best, best_rank = None, None
    for index, (r_driver, r_city, slot, created, value) in enumerate(rows):
        have = {"driver_id": r_driver, "city": r_city}
        ts = T0 + slot * SLOT
        if any(have[k] != wanted[k] for k in spec.keys) or ts > when:
            continue
        if spec.ttl and ts < when - spec.ttl:
            continue
        if cutoff and spec.has_created and (created is None or T0 + created * SLOT > when):
            continue
        created_rank = (created is not None, created or 0) if spec.has_created else (False, 0)
        rank = (ts, created_rank, index)
        if best_rank is None or rank > best_rank:
            best, best_rank = value, rank
    return best


key = st.none() | st.integers(0, 1) | st.integers(0, 1)  # a null key one time in three
feature_rows = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(0, 4),
        st.one_of(st.none(), st.integers(0, 1)),
        st.one_of(st.none(), st.integers(0, 99)),
    ),
    max_size=30,
)
entity_rows = st.lists(
    st.tuples(key, key, st.integers(-1, 6), st.sampled_from([timedelta(0), US, -US])),
    min_size=1,
    max_size=15,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.tuples(feature_rows, feature_rows, feature_rows),
    entity_spec=entity_rows,
    aware=st.booleans(),
    encoding=st.sampled_from(["offset", "scaled", "scaled-from-2-rows", "rank", "struct"]),
    cutoff=st.booleans(),
    layout=st.sampled_from(["plain", "ours", "false-claim"]),
)
def test_store_matches_brute_force_reference(
    store: tuple[FeatureStore, Path],
    data: tuple,
    entity_spec: list,
    aware: bool,
    encoding: str,
    cutoff: bool,
    layout: str,
) -> None:
    feature_store, root = store
    for spec, rows in zip(VIEWS, data, strict=True):
        write_source(root, spec, rows, layout)
    entity = [(d, c, T0 + slot * SLOT + jitter) for d, c, slot, jitter in entity_spec]
    timestamps = pd.to_datetime([e[2] for e in entity])
    if aware:
        # Same instants, written in another zone: the result must not change.
        timestamps = timestamps.tz_localize("UTC").tz_convert("America/Santiago")
    entity_df = pd.DataFrame(
        {
            "driver_id": pd.array([e[0] for e in entity], dtype="Int64"),
            "city": pd.array([e[1] for e in entity], dtype="Int64"),
            "event_timestamp": timestamps,
        }
    )
    # Small tables always fit the free offset encoding; narrower limits force the others.
    # A two-row sample often guesses a coarser grid than the data's, which must make the
    # join fall back to the exact steps.
    limits = {
        "offset": (62, 62, 62, 4096),
        "scaled": (0, 62, 62, 4096),
        "scaled-from-2-rows": (0, 62, 62, 2),
        "rank": (0, 0, 62, 4096),
        "struct": (0, 0, 0, 4096),
    }[encoding]
    sorted_joins: list[str] = []

    def sorted_match(plan, entity):  # records which views the sort-free join answered
        match = real_sorted_match(plan, entity)
        if match is not None:
            sorted_joins.append(plan.name)
        return match

    real_sorted_match = join._sorted_match
    with (
        mock.patch.object(join, "_sorted_match", sorted_match),
        mock.patch.object(join, "_MAX_OFFSET_BITS", limits[0]),
        mock.patch.object(join, "_MAX_SCALED_BITS", limits[1]),
        mock.patch.object(join, "_MAX_RANK_BITS", limits[2]),
        mock.patch.object(join, "_SAMPLE_ROWS", limits[3]),
    ):
        out = feature_store.get_historical_features(
            entity_df=entity_df,
            features=[f"{spec.name}:value" for spec in VIEWS],
            full_feature_names=True,
            filter_by_created_timestamp=cutoff,
        ).to_arrow()
    # Files laid out by the platform are joined without a sort, one view per join key; the
    # others (and any view under the created-time cutoff) by the general join.
    if layout == "ours" and not cutoff:
        assert sorted_joins == ["a", "c"]
    elif layout == "ours":
        assert sorted_joins == []
    else:
        assert "a" not in sorted_joins or layout == "false-claim"
    assert out.num_rows == len(entity)
    assert out.column("driver_id").to_pylist() == [e[0] for e in entity]
    assert out.column("city").to_pylist() == [e[1] for e in entity]
    for spec, rows in zip(VIEWS, data, strict=True):
        expected = [reference(spec, rows, e, cutoff) for e in entity]
        assert out.column(f"{spec.name}__value").to_pylist() == expected, spec.name


@settings(max_examples=25, deadline=None)
@given(rows=feature_rows, start=st.integers(0, 4), length=st.integers(0, 4))
def test_pull_latest_matches_brute_force(
    store: tuple[FeatureStore, Path], rows: list[Row], start: int, length: int
) -> None:
    feature_store, root = store
    spec = VIEWS[0]
    write_source(root, spec, rows)
    latest_spec = replace(spec, ttl=None)  # materialization has no TTL
    begin, end = T0 + start * SLOT, T0 + (start + length) * SLOT
    job = AsofOfflineStore.pull_latest_from_table_or_query(
        config=feature_store.config,
        data_source=feature_store.get_feature_view("a").batch_source,
        join_key_columns=["driver_id"],
        feature_name_columns=["value"],
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        start_date=begin.replace(tzinfo=UTC),
        end_date=end.replace(tzinfo=UTC),
    )
    table = job.to_arrow()
    got = dict(zip(table["driver_id"].to_pylist(), table["value"].to_pylist(), strict=True))
    in_range = [r if begin <= T0 + r[2] * SLOT <= end else None for r in rows]
    expected = {}
    for driver in {r[0] for r in rows}:
        # A row out of range must not be chosen, so it is replaced by one that never matches.
        masked: list[Row] = [r if r is not None else (-1, -1, 0, None, None) for r in in_range]
        if any(r[0] == driver for r in masked):
            expected[driver] = reference(latest_spec, masked, (driver, None, end))
    assert got == expected


@settings(max_examples=25, deadline=None)
@given(
    rows=feature_rows,
    start=st.integers(-1, 5),
    length=st.integers(0, 5),
    cutoff=st.booleans(),
)
def test_entityless_retrieval_matches_brute_force(
    store: tuple[FeatureStore, Path], rows: list[Row], start: int, length: int, cutoff: bool
) -> None:
    feature_store, root = store
    spec = VIEWS[0]
    write_source(root, spec, rows)
    begin, end = T0 + start * SLOT, T0 + (start + length) * SLOT
    out = feature_store.get_historical_features(
        features=["a:value"], start_date=begin, end_date=end, filter_by_created_timestamp=cutoff
    ).to_arrow()
    # Every driver with a row in [start, end], sorted, each with its value as of end from
    # the rows in range (a row before start is replaced by one that never matches).
    drivers = sorted({r[0] for r in rows if begin <= T0 + r[2] * SLOT <= end})
    in_range = [r if T0 + r[2] * SLOT >= begin else (-1, -1, 0, None, None) for r in rows]
    assert out.column("driver_id").to_pylist() == drivers
    expected = [reference(spec, in_range, (d, None, end), cutoff) for d in drivers]
    assert out.column("value").to_pylist() == expected
    assert set(out.column("event_timestamp").to_pylist()) <= {end.replace(tzinfo=UTC)}
