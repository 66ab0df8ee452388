"""The `FeatureSet` component: DuckDB SQL over sources -> parquet feature table -> Feast view."""

from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.cost.metering import PricingResource, meter
from platform_assets.tenancy.assets import (
    GATED,
    TeamComponent,
    asset_kwargs,
    expectations_check,
    team_asset,
)
from platform_assets.tenancy.catalog import (
    PlatformConfigError,
    TenantCatalog,
    check_source_refs,
    load_tenant,
    tenant_folder_of,
)
from platform_assets.tenancy.specs import FeatureSetSpec
from resources.feature_store import FeastResource
from resources.lake import LakeResource

if TYPE_CHECKING:  # pandas and pyarrow load in the steps, not with the code location
    import pandas as pd
    import pyarrow as pa

_DUCKDB_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "string": "VARCHAR", "bool": "BOOLEAN"}


def compute_feature_table(
    spec: FeatureSetSpec, sources: "dict[str, pa.Table]", where: str
) -> "pd.DataFrame":
    """Run the team's SQL with each source's snapshot registered as a table; cast to declared
    types. The platform reads the snapshots (from any filesystem), so the SQL opens no file."""
    import duckdb

    con = duckdb.connect()
    for name, table in sources.items():
        con.register(name, table)
    try:
        relation = con.sql(spec.sql)
    except duckdb.Error as exc:
        raise PlatformConfigError(
            where, "attributes.sql", f"DuckDB rejected the SQL: {exc}"
        ) from exc
    required = [spec.entity.join_key, spec.timestamp_field]
    if spec.created_timestamp_field:
        required.append(spec.created_timestamp_field)
    missing = [c for c in [*required, *spec.features] if c not in relation.columns]
    if missing:
        raise PlatformConfigError(
            where,
            "attributes.sql",
            f"the query does not return column(s) {', '.join(missing)} "
            f"(it returns {', '.join(relation.columns)})",
        )
    casts = ", ".join(
        f'cast("{n}" as {_DUCKDB_TYPES[t]}) as "{n}"' for n, t in spec.features.items()
    )
    keys = ", ".join(f'"{c}"' for c in required)
    con.register("computed", relation)
    return con.sql(
        f'select {keys}, {casts}, cast("{spec.timestamp_field}" as timestamp) '
        f'as "{spec.timestamp_feature}" from computed order by {keys}'
    ).df()


def feature_assets(catalog: TenantCatalog, spec: FeatureSetSpec) -> list[dg.AssetsDefinition]:
    """The asset `<tenant>/features/<name>` with its `expectations` check."""
    tenant = catalog.tenant
    check_source_refs(catalog, spec)
    where = catalog.file_of("feature_set", spec.name)
    kwargs = asset_kwargs(
        tenant,
        "feature_view",
        ["features", spec.name],
        spec.description,
        {"duckdb", "feast", "parquet"},
        source=where,
        metadata={
            "entity": spec.entity.name,
            "join_key": spec.entity.join_key,
            "ttl_days": spec.ttl_days,
            "features": dg.MetadataValue.json(spec.features),
        },
    )
    key = kwargs["key"]

    @team_asset(
        **kwargs,
        deps=[dg.AssetKey([tenant.name, "sources", s]) for s in spec.sources],
        check_specs=[
            expectations_check(key),
        ],
        automation_condition=GATED,
    )
    def feature_asset(lake: LakeResource, feast: FeastResource, pricing: PricingResource):
        from platform_assets.features.feast_objects import feature_view
        from platform_assets.quality.checks import expectation_check

        with meter(tenant.name, tenant.resources, pricing.catalog()) as usage:
            sources = {s: lake.read(tenant.name, "sources", s) for s in spec.sources}
            df = compute_feature_table(spec, sources, str(where))
            import pyarrow as pa

            snapshot = lake.write(
                tenant.name,
                "features",
                spec.name,
                pa.Table.from_pandas(df, preserve_index=False),
            )
            entity, view = feature_view(
                tenant.name, tenant.owners[0], spec, snapshot.uri, lake.s3_endpoint()
            )
            feast.store(tenant.name).apply([entity, view])
            quality = expectation_check(df, spec.expectations, f"{tenant.name}_{spec.name}")
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(snapshot.version),
            metadata={
                "dagster/row_count": len(df),
                "uri": snapshot.uri,
                "data_version": snapshot.version,
                "entities": int(df[spec.entity.join_key].nunique()),
                "feast_project": tenant.name,
                "feast_view": spec.name,
                "null_fraction": dg.MetadataValue.json(
                    {c: round(float(df[c].isna().mean()), 4) for c in spec.features}
                ),
                "preview": dg.MetadataValue.md(df.head(5).to_markdown(index=False)),
                **usage.metadata(pricing.catalog()),
            },
            check_results=[quality],
        )

    return [feature_asset]


class FeatureSet(TeamComponent, FeatureSetSpec):
    """A feature view of one tenant.

    The asset `<tenant>/features/<name>` runs the YAML's DuckDB SQL over the tenant's sources,
    writes the table to the offline store, registers entity and view in the tenant's Feast
    project, and runs the YAML's expectations as a blocking check.
    """

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        catalog = load_tenant(tenant_folder_of(context.path))
        spec = FeatureSetSpec.model_validate(self.model_dump())
        return dg.Definitions(assets=feature_assets(catalog, spec))
