"""AsofOfflineStore through Feast's FeatureStore: one test per rule of docs/point_in_time.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.errors import FeatureNameCollisionError
from feast.types import Float64, Int64, String

from platform_assets.features import offline_store
from platform_assets.features.offline_store import (
    AsofOfflineStore,
    OfflineStoreInputError,
    feature_store_yaml,
    join,
    sorted_match,
    sources,
)

T0 = datetime(2024, 1, 1)
H = timedelta(hours=1)
US = timedelta(microseconds=1)
DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class Repo:
    """A Feast repo in a temp dir using AsofOfflineStore, with one feature view per call."""

    def __init__(self, root: Path, extra_yaml: str = "") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        text = feature_store_yaml("pit", root, root / "registry.db", root / "online.db")
        if extra_yaml:
            text = text.replace(
                "  type: platform_assets.features.offline_store.AsofOfflineStore\n",
                "  type: platform_assets.features.offline_store.AsofOfflineStore\n" + extra_yaml,
            )
        (root / "feature_store.yaml").write_text(text)
        self.store = FeatureStore(repo_path=str(root))

    def view(
        self,
        rows: pd.DataFrame | None,
        name: str = "stats",
        ttl: timedelta | None = timedelta(days=1),
        entities: tuple[Entity, ...] = (DRIVER,),
        features: tuple[tuple[str, object], ...] = (("value", Int64),),
        created: str | None = "created",
        field_mapping: dict[str, str] | None = None,
        path: str | None = None,
    ) -> FeatureView:
        """Write `rows` to parquet (unless None) and apply a view over it."""
        if path is None:
            path = str(self.root / f"{name}.parquet")
            if rows is not None:
                rows.to_parquet(path, index=False)
        key_fields = [Field(name=k, dtype=Int64) for k in (e.join_key for e in entities)]
        fv = FeatureView(
            name=name,
            entities=list(entities),
            ttl=ttl,
            schema=[*key_fields, *(Field(name=n, dtype=t) for n, t in features)],
            source=FileSource(
                name=f"{name}_source",
                path=path,
                timestamp_field="event_timestamp",
                created_timestamp_column=created or "",
                field_mapping=field_mapping or {},
            ),
        )
        self.store.apply([*entities, fv])
        return fv

    def get(
        self, entity_df: pd.DataFrame, features: list[str] | FeatureService, **kw
    ) -> pd.DataFrame:
        return self.store.get_historical_features(
            entity_df=entity_df, features=features, **kw
        ).to_df()

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def rows(*records: tuple) -> pd.DataFrame:
    """Feature rows (driver_id, event hour, created hour or None, value)."""
    return pd.DataFrame(
        {
            "driver_id": [r[0] for r in records],
            "event_timestamp": [at(r[1]) for r in records],
            "created": pd.to_datetime([at(r[2]) if r[2] is not None else None for r in records]),
            "value": pd.array([r[3] for r in records], dtype="Int64"),
        }
    )


def entities(*records: tuple) -> pd.DataFrame:
    """Entity rows (driver_id, hour)."""
    return pd.DataFrame(
        {
            "driver_id": pd.array([r[0] for r in records], dtype="Int64"),
            "event_timestamp": [at(r[1]) for r in records],
        }
    )


def values(df: pd.DataFrame, column: str = "value") -> list:
    return [None if pd.isna(v) else v for v in df[column]]


# ---- rows, order and entity columns ---------------------------------------------------------


def test_one_row_per_entity_row_in_entity_order_with_entity_columns_unchanged(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10), (2, 0, 0, 20), (3, 0, 0, 30)))
    entity_df = pd.DataFrame(
        {
            "driver_id": [3, 1, 2, 1],
            "event_timestamp": pd.to_datetime([at(5), at(1), at(2), at(3)])
            .tz_localize("UTC")
            .tz_convert("Asia/Tokyo"),
            "label": ["c", "a", "b", "a2"],
            "seen_at": pd.to_datetime([at(1), at(2), at(3), at(4)]),  # naive
            "weight": [0.5, 1.5, None, 2.0],
        }
    )
    out = repo.get(entity_df, ["stats:value"])
    assert list(out.columns) == [*entity_df.columns, "value"]
    pd.testing.assert_frame_equal(out[entity_df.columns], entity_df)
    assert values(out) == [30, 10, 20, 10]


def test_duplicate_entity_rows_all_come_out(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10), (1, 2, 2, 12)))
    out = repo.get(entities((1, 1), (1, 3), (1, 1), (1, 1)), ["stats:value"])
    assert values(out) == [10, 12, 10, 10]


@pytest.mark.parametrize("semi_join", [False, True], ids=["key-match", "semi-join"])
@pytest.mark.parametrize("batched", [False, True], ids=["one-read", "read-per-group"])
def test_values_come_from_the_matched_rows_of_a_source_with_many_row_groups(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, semi_join: bool, batched: bool
) -> None:
    # 40 row groups of 5 rows: driver d = k // 5 at hours 0-4 of day d. The entity rows reach
    # a few groups, so only those are read for the values, and row numbers must still land on
    # the right values, whether the feature rows were cut by a semi-join or not, and whether
    # the groups are read at once or (over the byte budget) one batch at a time.
    if semi_join:
        monkeypatch.setattr(join, "_SEMI_JOIN_MAX_KEY_FRACTION", 1.0)
    if batched:
        monkeypatch.setattr(sources, "_VALUES_BATCH_BYTES", 1)
    data = rows(*[(k // 5, (k // 5) * 24 + k % 5, 0, k) for k in range(200)])
    data["name"] = [f"n{k}" if k % 7 else None for k in range(200)]
    path = repo.root / "stats.parquet"
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), path, row_group_size=5)
    repo.view(None, path=str(path), features=(("value", Int64), ("name", String)))
    day = 24
    out = repo.get(
        entities(
            (3, 3 * day + 2.5),
            (17, 17 * day + 10),
            (39, 39 * day),
            (3, 3 * day - 1),
            (25, 25 * day + 4),
            (18, 18 * day + 1.5),
        ),
        ["stats:value", "stats:name"],
    )
    assert values(out) == [17, 89, 195, None, 129, 91]
    assert values(out, "name") == ["n17", "n89", "n195", None, "n129", None]


def test_retrieval_metadata_gives_the_entity_time_range(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    naive = entities((1, 3), (1, 1), (1, 2))
    meta = repo.store.get_historical_features(entity_df=naive, features=["stats:value"]).metadata
    assert (meta.min_event_timestamp, meta.max_event_timestamp) == (at(1), at(3))
    aware = naive.assign(
        event_timestamp=naive["event_timestamp"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")
    )
    meta = repo.store.get_historical_features(entity_df=aware, features=["stats:value"]).metadata
    assert meta.min_event_timestamp == at(1).replace(tzinfo=UTC)
    assert meta.max_event_timestamp == at(3).replace(tzinfo=UTC)


# ---- candidates -------------------------------------------------------------------------------


def test_event_timestamp_equal_to_entity_time_is_a_candidate_and_later_is_not(repo: Repo) -> None:
    repo.view(rows((1, 1, 1, 10), (1, 2, 2, 20)))
    entity_df = pd.DataFrame(
        {"driver_id": [1, 1], "event_timestamp": [at(2), at(2) - US]},
    )
    assert values(repo.get(entity_df, ["stats:value"])) == [20, 10]


def test_ttl_lower_bound_is_inclusive(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)), ttl=timedelta(hours=2))
    entity_df = pd.DataFrame({"driver_id": [1, 1], "event_timestamp": [at(2), at(2) + US]})
    assert values(repo.get(entity_df, ["stats:value"])) == [10, None]


@pytest.mark.parametrize("ttl", [timedelta(0), None])
def test_ttl_zero_or_none_means_no_lower_bound(repo: Repo, ttl: timedelta | None) -> None:
    repo.view(rows((1, 0, 0, 10)), ttl=ttl)
    out = repo.get(entities((1, 24 * 365 * 10)), ["stats:value"])
    assert values(out) == [10]


def test_different_join_key_is_not_a_candidate(repo: Repo) -> None:
    repo.view(rows((2, 0, 0, 20)))
    assert values(repo.get(entities((1, 1)), ["stats:value"])) == [None]


# ---- choice among candidates ------------------------------------------------------------------


def test_latest_event_timestamp_wins_whatever_the_source_order(repo: Repo) -> None:
    repo.view(rows((1, 3, 0, 13), (1, 1, 9, 11), (1, 2, 0, 12)))
    assert values(repo.get(entities((1, 5), (1, 2.5)), ["stats:value"])) == [13, 12]


def test_tie_on_event_timestamp_goes_to_latest_created(repo: Repo) -> None:
    repo.view(rows((1, 1, 3, 13), (1, 1, 5, 15), (1, 1, 4, 14), (1, 1, None, 99)))
    assert values(repo.get(entities((1, 2)), ["stats:value"])) == [15]


def test_remaining_tie_goes_to_last_row_in_source(repo: Repo) -> None:
    repo.view(rows((1, 1, 2, 10), (1, 1, 2, 11), (1, 1, 2, 12), (1, 1, 1, 99)))
    assert values(repo.get(entities((1, 2)), ["stats:value"])) == [12]


def test_tie_without_created_column_goes_to_last_row_in_source(repo: Repo) -> None:
    data = rows((1, 1, 0, 10), (1, 1, 0, 11), (1, 1, 0, 12), (1, 0, 0, 99)).drop(columns="created")
    repo.view(data, created=None)
    assert values(repo.get(entities((1, 2)), ["stats:value"])) == [12]


def test_result_does_not_depend_on_thread_count_or_entity_order(tmp_path: Path) -> None:
    data = rows(*[(k % 7, k % 5, k % 3, k) for k in range(400)])
    entity_df = entities(*[(k % 8, (k * 7) % 6 + 0.5) for k in range(300)])
    results = []
    for threads in (1, 2):
        repo = Repo(tmp_path / f"threads{threads}", extra_yaml=f"  threads: {threads}\n")
        repo.view(data)
        results.append(values(repo.get(entity_df, ["stats:value"])))
        shuffled = entity_df.sample(frac=1.0, random_state=threads)
        out = repo.get(shuffled, ["stats:value"])
        assert values(out) == [results[-1][i] for i in shuffled.index]
    assert results[0] == results[1]


# ---- nulls ------------------------------------------------------------------------------------


def test_no_candidate_gives_null_features(repo: Repo) -> None:
    repo.view(rows((1, 5, 5, 10)))
    assert values(repo.get(entities((1, 4), (9, 6)), ["stats:value"])) == [None, None]


def test_null_join_key_gives_null_features(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    assert values(repo.get(entities((None, 1), (1, 1)), ["stats:value"])) == [None, 10]


def test_null_value_in_chosen_row_stays_null(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10), (1, 1, 1, None)))
    assert values(repo.get(entities((1, 2)), ["stats:value"])) == [None]


# ---- timestamps -------------------------------------------------------------------------------


def test_naive_timestamps_are_utc_and_aware_ones_are_converted(repo: Repo) -> None:
    data = rows((1, 0, 0, 10), (1, 2, 2, 12))
    # The source holds aware times in another zone: 09:00+09:00 is 00:00 UTC.
    data["event_timestamp"] = (
        data["event_timestamp"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")
    )
    repo.view(data)
    entity_df = pd.DataFrame(
        {
            "driver_id": [1, 1, 1],
            "event_timestamp": pd.to_datetime(
                [
                    "2024-01-01 02:30:00+01:00",  # 01:30 UTC
                    "2024-01-01 01:59:59+00:00",
                    "2024-01-01 05:00:00+03:00",  # 02:00 UTC
                ],
                utc=True,
            ).tz_convert("America/New_York"),
        }
    )
    assert values(repo.get(entity_df, ["stats:value"])) == [10, 10, 12]
    naive = pd.DataFrame({"driver_id": [1, 1], "event_timestamp": [at(2) - US, at(2)]})
    assert values(repo.get(naive, ["stats:value"])) == [10, 12]


def test_timestamps_have_microsecond_precision(repo: Repo) -> None:
    data = rows((1, 0, 0, 10), (1, 1, 1, 11))
    data["event_timestamp"] = data["event_timestamp"].astype("datetime64[ns]")
    data.loc[1, "event_timestamp"] += pd.Timedelta(nanoseconds=500)  # 01:00:00.0000005
    repo.view(data)
    entity_df = pd.DataFrame(
        {
            "driver_id": [1, 1],
            # 01:00:00.000000999 truncates to 01:00:00.000000, the feature row's own microsecond.
            "event_timestamp": pd.to_datetime(["2024-01-01 01:00:00.000000999", at(1) - US]),
        }
    )
    assert values(repo.get(entity_df, ["stats:value"])) == [11, 10]


# ---- names ------------------------------------------------------------------------------------


def test_full_feature_names_prefix_the_view_name(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    out = repo.get(entities((1, 1)), ["stats:value"], full_feature_names=True)
    assert list(out.columns) == ["driver_id", "event_timestamp", "stats__value"]


def test_feature_name_clash_raises_feast_collision_error(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)), name="a")
    repo.view(rows((1, 0, 0, 20)), name="b")
    with pytest.raises(FeatureNameCollisionError):
        repo.get(entities((1, 1)), ["a:value", "b:value"])
    out = repo.get(entities((1, 1)), ["a:value", "b:value"], full_feature_names=True)
    assert values(out, "a__value") == [10] and values(out, "b__value") == [20]


def test_feature_name_clash_is_also_caught_by_the_store_itself(repo: Repo) -> None:
    a = repo.view(rows((1, 0, 0, 10)), name="a")
    b = repo.view(rows((1, 0, 0, 20)), name="b")
    with pytest.raises(FeatureNameCollisionError):
        AsofOfflineStore.get_historical_features(
            repo.store.config,
            [a, b],
            ["a:value", "b:value"],
            entities((1, 1)),
            repo.store.registry,
            "pit",
        )


# ---- several views, keys and projections ------------------------------------------------------


def test_views_with_different_entities_and_ttls_join_one_after_another(repo: Repo) -> None:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    repo.view(rows((1, 0, 0, 10), (1, 4, 4, 14)), name="drv", ttl=timedelta(hours=1))
    cust = pd.DataFrame(
        {
            "customer_id": [7, 7],
            "event_timestamp": [at(0), at(3)],
            "created": [at(0), at(3)],
            "spend": [1.5, 2.5],
        }
    )
    repo.view(cust, name="cust", ttl=None, entities=(customer,), features=(("spend", Float64),))
    entity_df = pd.DataFrame(
        {"driver_id": [1, 1], "customer_id": [7, 8], "event_timestamp": [at(0.5), at(5)]}
    )
    out = repo.get(entity_df, ["drv:value", "cust:spend"])
    assert values(out) == [10, 14]
    assert values(out, "spend") == [1.5, None]


def test_multiple_join_keys_must_all_match(repo: Repo) -> None:
    city = Entity(name="city", join_keys=["city"], value_type=ValueType.INT64)
    data = pd.DataFrame(
        {
            "driver_id": [1, 1, 2],
            "city": [1, 2, 1],
            "event_timestamp": [at(0), at(0), at(0)],
            "created": [at(0), at(0), at(0)],
            "value": [11, 12, 21],
        }
    )
    repo.view(data, entities=(DRIVER, city))
    entity_df = pd.DataFrame(
        {"driver_id": [2, 1, 1, 2], "city": [1, 2, 1, 2], "event_timestamp": [at(1)] * 4}
    )
    assert values(repo.get(entity_df, ["stats:value"])) == [21, 12, 11, None]


def test_field_mapping_and_join_key_map_projection(repo: Repo) -> None:
    data = pd.DataFrame(
        {
            "drv": [1, 2],
            "ts": [at(0), at(0)],
            "created": [at(0), at(0)],
            "raw_value": [10, 20],
            "name_raw": ["a", "b"],
        }
    )
    path = repo.root / "mapped.parquet"
    data.to_parquet(path, index=False)
    fv = FeatureView(
        name="mapped",
        entities=[DRIVER],
        ttl=None,
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="value", dtype=Int64),
            Field(name="name", dtype=String),
        ],
        source=FileSource(
            name="mapped_source",
            path=str(path),
            timestamp_field="ts",
            created_timestamp_column="created",
            field_mapping={"drv": "driver_id", "raw_value": "value", "name_raw": "name"},
        ),
    )
    service = FeatureService(
        name="svc",
        features=[fv.with_name("rider").with_join_key_map({"driver_id": "rider_id"})],
    )
    repo.store.apply([DRIVER, fv, service])
    plain = repo.get(entities((2, 1), (1, 1)), ["mapped:value", "mapped:name"])
    assert values(plain) == [20, 10] and values(plain, "name") == ["b", "a"]
    entity_df = pd.DataFrame({"rider_id": [1, 3], "event_timestamp": [at(1), at(1)]})
    out = repo.get(entity_df, repo.store.get_feature_service("svc"), full_feature_names=True)
    assert values(out, "rider__value") == [10, None]


# ---- materialization and the pull_* entry points ---------------------------------------------


def test_materialize_fills_the_online_store_with_latest_values(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10), (1, 2, 2, 12), (1, 2, 2, 13), (2, 1, 1, 21), (2, 1, 0, 20)))
    repo.store.materialize(at(-1).replace(tzinfo=UTC), at(10).replace(tzinfo=UTC))
    online = repo.store.get_online_features(
        features=["stats:value"], entity_rows=[{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}]
    ).to_dict()
    assert online["value"] == [13, 21, None]


def test_pull_latest_and_pull_all_respect_the_time_range(repo: Repo) -> None:
    fv = repo.view(rows((1, 0, 0, 10), (1, 2, 2, 12), (1, 5, 5, 15), (2, 1, 1, 21)))
    args = dict(
        config=repo.store.config,
        data_source=fv.batch_source,
        join_key_columns=["driver_id"],
        feature_name_columns=["value"],
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        start_date=at(0).replace(tzinfo=UTC),
        end_date=at(2).replace(tzinfo=UTC),
    )
    latest = AsofOfflineStore.pull_latest_from_table_or_query(**args).to_arrow()
    assert sorted(
        zip(latest["driver_id"].to_pylist(), latest["value"].to_pylist(), strict=True)
    ) == [
        (1, 12),
        (2, 21),
    ]
    assert latest.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    everything = AsofOfflineStore.pull_all_from_table_or_query(**args).to_df()
    assert everything["value"].tolist() == [10, 12, 21]


def test_source_read_through_an_fsspec_uri(repo: Repo) -> None:
    import fsspec

    data = rows((1, 0, 0, 10), (1, 1, 1, 11))
    fs = fsspec.filesystem("memory")
    with fs.open("/pit/stats.parquet", "wb") as handle:
        pq.write_table(pa.Table.from_pandas(data, preserve_index=False), handle)
    repo.view(None, path="memory://pit/stats.parquet")
    assert values(repo.get(entities((1, 0.5), (1, 3)), ["stats:value"])) == [10, 11]


def test_helper_yaml_selects_the_store(repo: Repo) -> None:
    assert type(repo.store.config.offline_store).__name__ == "AsofOfflineStoreConfig"
    assert repo.store.config.online_store.type == "sqlite"


# ---- layout for the join ----------------------------------------------------------------------


def test_feature_table_written_for_the_join_is_sorted_marked_and_row_grouped(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 drivers x 50 rows, written shuffled; the writer sorts by (driver, event, created).
    data = rows(*[(k % 10, (k * 7) % 50, (k * 3) % 4, k) for k in range(500)])
    data = data.sample(frac=1.0, random_state=1).reset_index(drop=True)
    path = repo.root / "stats.parquet"
    table = pa.Table.from_pandas(data, preserve_index=False)
    offline_store.write_feature_table(
        table, path, ["driver_id"], "event_timestamp", "created", row_group_rows=50
    )
    written = pq.ParquetFile(path)
    assert written.metadata.num_row_groups == 10
    assert written.schema_arrow.metadata[offline_store.LAYOUT_KEY] == (
        b'{"sorted_by": ["driver_id", "event_timestamp", "created"]}'
    )
    assert [c.column_index for c in written.metadata.row_group(0).sorting_columns] == [0, 1, 2]
    back = written.read().to_pandas()
    assert back.equals(back.sort_values(["driver_id", "event_timestamp", "created"], kind="stable"))
    repo.view(None, path=str(path))
    groups_read: list[list[int]] = []
    real = sorted_match._groups_in_key_range

    def spy(*args):
        groups_read.append(real(*args))
        return groups_read[-1]

    monkeypatch.setattr(sorted_match, "_groups_in_key_range", spy)
    entity_df = entities((3, 20), (4, 49.5), (3, 0))
    out = repo.get(entity_df, ["stats:value"])
    # Only the two drivers' row groups are read for the join (drivers 3 and 4 are groups 3, 4).
    assert groups_read == [[3, 4]]
    # The latest (event, created) within the 1-day TTL; a tie goes to the last row of the file.
    expected = []
    for d, h in ((3, 20), (4, 49.5), (3, 0)):
        window = back["event_timestamp"].between(at(h) - timedelta(days=1), at(h))
        candidates = back[(back.driver_id == d) & window]
        expected.append(candidates["value"].iloc[-1] if len(candidates) else None)
    assert values(out) == expected
    assert expected[2] is None and None not in expected[:2]


# ---- filter_by_created_timestamp -------------------------------------------------------------


def test_created_timestamp_cutoff_keeps_rows_created_after_t_out(repo: Repo) -> None:
    # A backfill at hour 9 rewrote hour 1's value; at hour 2 only the original was known.
    repo.view(rows((1, 1, 1, 10), (1, 1, 9, 19), (2, 0, 0, 20), (2, 1, 5, 21), (3, 1, None, 30)))
    entity_df = entities((1, 2), (1, 10), (2, 2), (2, 6), (3, 2))
    assert values(repo.get(entity_df, ["stats:value"])) == [19, 19, 21, 21, 30]
    cut = repo.get(entity_df, ["stats:value"], filter_by_created_timestamp=True)
    # A null created time is never known to be <= T, so it is no candidate under the cutoff.
    assert values(cut) == [10, 19, 20, 21, None]


def test_created_timestamp_cutoff_still_applies_the_ttl_to_the_best_visible_row(
    repo: Repo,
) -> None:
    # The latest row visible at hour 30 is the one from hour 0 (hour 20's was created at 40).
    repo.view(rows((1, 0, 0, 10), (1, 20, 40, 12)), ttl=timedelta(hours=24))
    cut = repo.get(entities((1, 30), (1, 23)), ["stats:value"], filter_by_created_timestamp=True)
    assert values(cut) == [None, 10]


def test_created_timestamp_cutoff_leaves_views_without_created_column_alone(repo: Repo) -> None:
    repo.view(rows((1, 1, 0, 10)).drop(columns="created"), created=None)
    cut = repo.get(entities((1, 2)), ["stats:value"], filter_by_created_timestamp=True)
    assert values(cut) == [10]


# ---- retrieval without entity rows ------------------------------------------------------------


def test_entityless_retrieval_gives_each_entity_its_latest_row_in_the_range(repo: Repo) -> None:
    repo.view(
        rows((1, 0, 0, 10), (1, 2, 2, 12), (1, 5, 5, 15), (2, 1, 1, 21), (3, 6, 6, 36)),
        ttl=timedelta(0),
    )
    out = repo.store.get_historical_features(
        features=["stats:value"],
        start_date=at(1).replace(tzinfo=UTC),
        end_date=at(4).replace(tzinfo=UTC),
    ).to_df()
    assert out["driver_id"].tolist() == [1, 2]
    assert values(out) == [12, 21]
    assert (out["event_timestamp"] == pd.Timestamp(at(4), tz="UTC")).all()


def test_entityless_retrieval_defaults_start_to_end_minus_ttl(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10), (2, 3, 3, 23)), ttl=timedelta(hours=2))
    job = repo.store.get_historical_features(features=["stats:value"], end_date=at(4))
    out = job.to_df()
    assert (out["driver_id"].tolist(), values(out)) == ([2], [23])
    assert job.metadata.min_event_timestamp == at(2).replace(tzinfo=UTC)


def test_entityless_retrieval_with_the_created_timestamp_cutoff(repo: Repo) -> None:
    repo.view(rows((1, 1, 1, 10), (1, 2, 9, 19)), ttl=timedelta(0))
    out = repo.store.get_historical_features(
        features=["stats:value"],
        start_date=at(0),
        end_date=at(3),
        filter_by_created_timestamp=True,
    ).to_df()
    assert values(out) == [10]


# ---- saved datasets ---------------------------------------------------------------------------

# Feast warns on every create_saved_dataset / get_saved_dataset that the API is experimental;
# only those two warnings are silenced, and only in the tests that call them.
experimental_api = pytest.mark.filterwarnings(
    "ignore:(Saving|Retrieving) datasets? is an experimental feature:RuntimeWarning"
)


def _saved(repo: Repo, name: str, destination: Path, allow_overwrite: bool = False):
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    job = repo.store.get_historical_features(
        entity_df=entities((1, 1), (2, 3)), features=["stats:value"]
    )
    return repo.store.create_saved_dataset(
        from_=job,
        name=name,
        storage=SavedDatasetFileStorage(path=str(destination)),
        allow_overwrite=allow_overwrite,
    )


@experimental_api
@pytest.mark.parametrize("destination", ["train.parquet", "train_dir", "empty_dir"])
def test_saved_dataset_persists_to_a_file_or_directory_and_reads_back(
    repo: Repo, destination: str
) -> None:
    repo.view(rows((1, 0, 0, 10), (2, 2, 2, 22)))
    path = repo.root / destination
    if destination == "empty_dir":
        path.mkdir()
    _saved(repo, "train", path)
    back = repo.store.get_saved_dataset("train").to_df().sort_values("driver_id")
    assert back["driver_id"].tolist() == [1, 2]
    assert values(back) == [10, 22]
    assert back["event_timestamp"].tolist() == [pd.Timestamp(at(h), tz="UTC") for h in (1, 3)]
    assert path.is_file() == destination.endswith(".parquet")


@experimental_api
def test_saved_dataset_of_ours_is_replaced_only_with_allow_overwrite(repo: Repo) -> None:
    from feast.errors import SavedDatasetLocationAlreadyExists

    repo.view(rows((1, 0, 0, 10), (2, 2, 2, 22)))
    path = repo.root / "train_dir"
    _saved(repo, "train", path)
    with pytest.raises(SavedDatasetLocationAlreadyExists, match="train_dir already exists"):
        _saved(repo, "train", path)
    repo.view(rows((1, 0, 0, 11), (2, 2, 2, 23)))
    _saved(repo, "train", path, allow_overwrite=True)
    assert sorted(values(repo.store.get_saved_dataset("train").to_df())) == [11, 23]
    assert sorted(p.name for p in path.iterdir()) == ["data.parquet"]


def test_retrieval_with_sql_entity_rows_is_refused(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    with pytest.raises(OfflineStoreInputError, match=r"\['stats'\].*got str.*SQL entity"):
        repo.store.get_historical_features(entity_df="SELECT 1", features=["stats:value"])


# ---- bad input: one test per path, each names the view, file and column ----------------------


def _raises(repo: Repo, entity_df: pd.DataFrame, match: str, features=("stats:value",)) -> None:
    before = repo.files()
    with pytest.raises(OfflineStoreInputError, match=match):
        repo.get(entity_df, list(features))
    assert repo.files() == before, "a failed retrieval must write nothing"


def test_entity_frame_without_join_key_column(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    entity_df = pd.DataFrame({"rider": [1], "event_timestamp": [at(1)]})
    _raises(repo, entity_df, r"feature view 'stats'.*no join key column 'driver_id'")


def test_entity_frame_without_timestamp_column(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    _raises(repo, pd.DataFrame({"driver_id": [1]}), r"\['stats'\].*no timestamp column")


def test_entity_timestamp_of_the_wrong_type(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    entity_df = pd.DataFrame({"driver_id": [1], "event_timestamp": ["2024-01-01"]})
    _raises(repo, entity_df, r"\['stats'\].*column 'event_timestamp' has type string")


def test_missing_source_file(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    (repo.root / "stats.parquet").unlink()
    _raises(
        repo, entities((1, 1)), r"feature view 'stats', file '.*stats\.parquet'.*does not exist"
    )


def test_unreadable_source_file(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    (repo.root / "stats.parquet").write_bytes(b"not parquet at all")
    _raises(repo, entities((1, 1)), r"feature view 'stats', file '.*stats\.parquet'.*not readable")


def test_source_lacking_a_declared_column(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    rows((1, 0, 0, 10)).drop(columns="value").to_parquet(repo.root / "stats.parquet")
    _raises(repo, entities((1, 1)), r"feature view 'stats', file '.*stats\.parquet'.*\['value'\]")


def test_source_timestamp_of_the_wrong_type(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    data = rows((1, 0, 0, 10))
    data["event_timestamp"] = data["event_timestamp"].astype(str)
    data.to_parquet(repo.root / "stats.parquet")
    _raises(
        repo,
        entities((1, 1)),
        r"feature view 'stats', file '.*stats\.parquet'.*column 'event_timestamp' has type string",
    )


def test_join_key_that_cannot_match_the_source_type(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    entity_df = pd.DataFrame({"driver_id": ["one"], "event_timestamp": [at(1)]})
    _raises(
        repo,
        entity_df,
        r"feature view 'stats', file '.*stats\.parquet': point-in-time join failed: "
        r".*convert string 'one' to INT64 .*column driver_id",
    )


@experimental_api
@pytest.mark.parametrize("kind", ["foreign_file", "foreign_dir", "file_for_dir"])
def test_saved_dataset_destination_that_is_not_ours_is_left_untouched(
    repo: Repo, kind: str
) -> None:
    from feast.errors import SavedDatasetLocationAlreadyExists

    repo.view(rows((1, 0, 0, 10)))
    if kind == "foreign_file":
        path = repo.root / "theirs.parquet"
        rows((5, 0, 0, 50)).to_parquet(path)
        reason = "a parquet file without the saved-dataset marker"
    elif kind == "foreign_dir":
        path = repo.root / "theirs"
        path.mkdir()
        (path / "notes.txt").write_text("keep me")
        reason = r"a directory holding \['notes.txt'\]"
    else:
        path = repo.root / "theirs"
        path.write_text("keep me")
        reason = "a file where the directory destination should be"
    before = {p: p.read_bytes() for p in [path, *path.rglob("*")] if p.is_file()}
    with pytest.raises(SavedDatasetLocationAlreadyExists) as raised:
        _saved(repo, "train", path, allow_overwrite=True)
    assert isinstance(raised.value, OfflineStoreInputError)
    assert re.search(
        rf"saved dataset destination '.*{path.name}' exists and is not a saved dataset written "
        rf"by AsofOfflineStore \({reason}\); it was left untouched",
        str(raised.value),
    )
    assert {p: p.read_bytes() for p in [path, *path.rglob("*")] if p.is_file()} == before
    assert [d.name for d in repo.store.list_saved_datasets()] == []


def test_entityless_retrieval_with_start_after_end(repo: Repo) -> None:
    repo.view(rows((1, 0, 0, 10)))
    with pytest.raises(
        OfflineStoreInputError,
        match=r"entity-less retrieval of feature view\(s\) \['stats'\]: start_date "
        r"2024-01-01T05:00:00\+00:00 is after end_date 2024-01-01T02:00:00\+00:00",
    ):
        repo.store.get_historical_features(
            features=["stats:value"], start_date=at(5), end_date=at(2)
        )
    assert not any(p.name.startswith("saved") for p in repo.root.iterdir())
