"""Online features: `<tenant>/online/<feature_set>` copies new rows of a feature view into the
tenant's Feast online store (SQLite locally, Redis in `services`), incrementally, with Feast's
own materialization; the serving app (`app.py`) reads them from there."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.env import deployment
from platform_assets.resources.feature_store import FeastResource
from platform_assets.tenancy.assets import GATED, Placement, asset_kwargs, team_asset
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.specs import FeatureSetSpec

if TYPE_CHECKING:  # feast loads in the steps, not with the code location
    from feast import FeatureStore, FeatureView

# The first run copies the whole history: Feast's own `materialize_incremental` would start at
# now - TTL and leave an online store empty for any table whose rows are older than that.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WATERMARK = "watermark"
NEWEST = "newest_event_timestamp"


def previous_run(
    instance: dg.DagsterInstance, key: dg.AssetKey, view: "FeatureView"
) -> tuple[datetime, datetime | None]:
    """(watermark, newest event time written) of the last run: where it stopped and how fresh
    the online store is. EPOCH and None when the online store has been emptied since (the
    view's materialization intervals are gone from a fresh registry)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return EPOCH, None
    if view.most_recent_end_time is None:
        # Feast records an interval with every materialization (and keeps them when the view
        # is applied again); none means a new registry and online store, e.g. `make clean`.
        return EPOCH, None
    metadata = event.asset_materialization.metadata

    def at(name: str) -> datetime | None:
        entry = metadata.get(name)
        return datetime.fromtimestamp(entry.value, UTC) if entry is not None else None

    return at(WATERMARK) or EPOCH, at(NEWEST)


def rows_to_write(
    store: "FeatureStore", view: "FeatureView", start: datetime, end: datetime
) -> tuple[int, datetime | None]:
    """(rows, newest event time) that Feast's materialization writes for [start, end]: the
    latest row per key, as the offline store's `pull_latest_from_table_or_query` returns them
    (the call Feast makes), reading only the key and time columns."""
    import pyarrow.compute as pc
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    offline = get_offline_store_from_config(store.config.offline_store)
    source = view.batch_source
    table = offline.pull_latest_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[c.name for c in view.entity_columns],
        feature_name_columns=[],
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=start,
        end_date=end,
    ).to_arrow()
    if table.num_rows == 0:
        return 0, None
    newest = pc.max(table.column(source.timestamp_field)).as_py()
    return table.num_rows, newest


def online_assets(
    catalog: TenantCatalog, spec: FeatureSetSpec, placement: Placement | None = None
) -> list[dg.AssetsDefinition]:
    """`<tenant>/online/<name>`: new rows of the feature view, into the online store."""
    tenant = catalog.tenant
    upstream = dg.AssetKey([tenant.name, "features", spec.name])
    store_kind = "sqlite" if deployment() == "local" else "redis"
    kwargs = asset_kwargs(
        tenant,
        "online_features",
        ["online", spec.name],
        f"Latest values of feature view {spec.name} per {spec.entity.join_key} in the Feast "
        f"online store, for serving; rows newer than the last run's watermark are added.",
        {"feast", store_kind},
        source=catalog.file_of("feature_set", spec.name),
        metadata={"feast_view": spec.name, "join_key": spec.entity.join_key},
        placement=placement,
    )
    key = kwargs["key"]

    # GATED: runs only once the feature view's blocking checks pass, like every asset; in a run
    # a failed blocking check on the view stops this step.
    @team_asset(**kwargs, deps=[upstream], automation_condition=GATED)
    def online_features(context: dg.AssetExecutionContext, feast: FeastResource):
        store = feast.store(tenant.name)
        view = store.get_feature_view(spec.name)
        start, fresh = previous_run(context.instance, key, view)
        end = datetime.now(UTC)
        rows, newest = rows_to_write(store, view, start, end)
        if rows:
            store.materialize(start_date=start, end_date=end, feature_views=[spec.name])
        # Freshness: the newest event time in the online store, this run's or an earlier one's.
        fresh = max(filter(None, (fresh, newest)), default=None)
        newest_meta = {NEWEST: dg.MetadataValue.timestamp(fresh)} if fresh else {}
        context.log.info(
            f"{rows} row(s) of {spec.name} with event times in [{start:%Y-%m-%d %H:%M:%S}, "
            f"{end:%Y-%m-%d %H:%M:%S}] written to the {store.config.online_store.type} online "
            "store"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "rows_written": rows,
                **newest_meta,
                "window_start": dg.MetadataValue.timestamp(start),
                WATERMARK: dg.MetadataValue.timestamp(end),
                "online_store": store.config.online_store.type,
                "feast_project": tenant.name,
            }
        )

    return [online_features]
