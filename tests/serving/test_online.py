"""The online-features asset: Feast's materialization into the tenant's online store, new rows
only on later runs, gated by the feature view's blocking check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import dagster as dg
import pyarrow as pa
import pytest

from tests.platform_sandbox import sandbox

pytestmark = pytest.mark.materialize

SOURCE = dg.AssetKey(["ridehail", "sources", "trips"])
FEATURES = dg.AssetKey(["ridehail", "features", "driver_stats"])
ONLINE = dg.AssetKey(["ridehail", "online", "driver_stats"])


def materialize(defs: dg.Definitions, instance, keys: list[dg.AssetKey], **kw):
    """`dg.materialize` of the tenant's own asset definitions (unbound: `defs` holds them bound
    to its resources), selecting `keys`."""
    from platform_assets.composition.locations import tenant_assets
    from platform_assets.tenancy.catalog import load_all

    return dg.materialize(
        tenant_assets(load_all()["ridehail"]),
        instance=instance,
        resources=defs.resources,
        selection=keys,
        **kw,
    )


def metadata(instance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def online(store, driver_ids: list[str]) -> dict:
    return store.get_online_features(
        features=["driver_stats:trips_7d", "driver_stats:avg_rating_7d"],
        entity_rows=[{"driver_id": d} for d in driver_ids],
    ).to_dict()


def add_rows(defs: dg.Definitions, rows: list[dict]) -> None:
    """A new snapshot of the feature table with `rows` added, registered as the feature asset
    registers it (the SQL's rows are day-aligned, so new ones come from here)."""
    from platform_assets.features.feast_objects import feature_view
    from platform_assets.features.offline_store import layout_for_join
    from platform_assets.tenancy.catalog import load_all

    lake, feast = defs.resources["lake"], defs.resources["feast"]
    table = lake.read("ridehail", "features", "driver_stats")
    extra = pa.Table.from_pylist(rows, schema=table.schema)
    table = layout_for_join(
        pa.concat_tables([table, extra]), ["driver_id"], "event_timestamp", "created_timestamp"
    )
    snapshot = lake.write("ridehail", "features", "driver_stats", table)
    catalog = load_all()["ridehail"]
    spec = catalog.feature_sets["driver_stats"]
    entity, view = feature_view("ridehail", catalog.tenant.owners[0], spec, snapshot.uri)
    feast.store("ridehail").apply([entity, view])


def new_row(template: dict, driver_id: str, trips: int, at: datetime) -> dict:
    naive = at.astimezone(UTC).replace(tzinfo=None)
    return {
        **template,
        "driver_id": driver_id,
        "event_timestamp": naive,
        "created_timestamp": naive,
        "trips_7d": trips,
        "driver_stats_ts": naive,
    }


def check_online_incremental(defs: dg.Definitions, instance) -> None:
    result = materialize(defs, instance, [SOURCE, FEATURES, ONLINE])
    assert result.success
    lake = defs.resources["lake"]
    table = lake.read("ridehail", "features", "driver_stats").to_pandas()
    latest = table.sort_values(["event_timestamp", "created_timestamp"]).groupby("driver_id").last()
    first = metadata(instance, ONLINE)
    assert first["rows_written"] == len(latest) > 10
    assert first["newest_event_timestamp"] == pytest.approx(
        table["event_timestamp"].max().tz_localize(UTC).timestamp()
    )
    assert first["window_start"] == 0.0
    store = defs.resources["feast"].store("ridehail")
    ids = sorted(latest.index)[:3]
    assert online(store, ids)["trips_7d"] == [int(latest.loc[i, "trips_7d"]) for i in ids]

    # Nothing new: the second run writes nothing and keeps the freshness it had.
    assert materialize(defs, instance, [ONLINE]).success
    second = metadata(instance, ONLINE)
    assert second["rows_written"] == 0
    assert second["window_start"] == pytest.approx(first["watermark"])
    assert second["newest_event_timestamp"] == first["newest_event_timestamp"]

    # Two rows newer than the watermark (one of a known driver, one of a new driver) and one
    # older than it: only the newer two are written.
    template = table.iloc[0].to_dict()
    watermark = datetime.fromtimestamp(second["watermark"], UTC)
    # Just after the watermark, and so before the next run's end (now): a second later could be
    # after it when the runs are fast.
    fresh = watermark + timedelta(milliseconds=1)
    new_driver = f"d-{uuid.uuid4().hex[:6]}"
    add_rows(
        defs,
        [
            new_row(template, ids[0], 999, fresh),
            new_row(template, new_driver, 7, fresh),
            new_row(template, ids[1], 555, watermark - timedelta(days=1)),
        ],
    )
    assert materialize(defs, instance, [ONLINE]).success
    third = metadata(instance, ONLINE)
    assert third["rows_written"] == 2
    assert third["newest_event_timestamp"] == pytest.approx(fresh.timestamp(), abs=1e-3)
    values = online(store, [ids[0], new_driver, ids[1]])["trips_7d"]
    assert values == [999, 7, int(latest.loc[ids[1], "trips_7d"])]


def test_online_store_filled_then_only_new_rows(monkeypatch, platform_home, instance):
    with sandbox(monkeypatch) as (_, build):
        defs = build()
        check_online_incremental(defs, instance)
        assert defs.resources["feast"].store("ridehail").config.online_store.type == "sqlite"


def test_online_store_on_redis(monkeypatch, platform_home, instance, redis_url):
    import redis

    db = 13  # this module's own Redis database; only the keys of its projects are removed
    project = "ridehail"
    with sandbox(monkeypatch) as (_, build):
        defs = build()
        feast = defs.resources["feast"]
        redis_feast = type(feast)(root=feast.root, redis=f"127.0.0.1:6379,db={db}")
        defs = SimpleNamespace(resources={**defs.resources, "feast": redis_feast})
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        try:
            check_online_incremental(defs, instance)
            assert defs.resources["feast"].store(project).config.online_store.type == "redis"
        finally:
            for key in client.scan_iter():
                if key.endswith(project.encode()):
                    client.delete(key)


def test_online_waits_for_the_feature_views_blocking_check(monkeypatch, platform_home, instance):
    import yaml

    with sandbox(monkeypatch) as (root, build):
        path = root / "ridehail" / "features" / "driver_stats" / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["expectations"].append(
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "trips_7d", "min_value": 0, "max_value": 1},
            }
        )
        path.write_text(yaml.safe_dump(doc))
        defs = build()
        result = materialize(defs, instance, [SOURCE, FEATURES, ONLINE], raise_on_error=False)
        assert not result.success
        done = {e.asset_key for e in result.get_asset_materialization_events()}
        assert FEATURES in done and ONLINE not in done
        assert instance.get_latest_materialization_event(ONLINE) is None
        from platform_assets.tenancy.assets import GATED

        spec = next(s for s in defs.resolve_all_asset_specs() if s.key == ONLINE)
        assert spec.automation_condition == GATED
