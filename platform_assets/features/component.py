"""The `FeatureSet` component: DuckDB SQL over sources -> parquet feature table -> Feast view."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.features.feast_objects import feature_view
from platform_assets.features.inputs import record_inputs
from platform_assets.features.sandbox import SandboxError, sandbox
from platform_assets.quality.checks import expectation_check
from platform_assets.resources.feature_store import FeastResource, apply
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import (
    Placement,
    TeamComponent,
    asset_kwargs,
    expectations_check,
    team_asset,
)
from platform_assets.tenancy.automation import scheduled_condition
from platform_assets.tenancy.catalog import (
    PlatformConfigError,
    TenantCatalog,
    check_source_refs,
)
from platform_assets.tenancy.limits import SqlLimits, sql_limits
from platform_assets.tenancy.specs import FeatureSetSpec

if TYPE_CHECKING:  # pandas and pyarrow load in the steps, not with the code location
    import pandas as pd
    import pyarrow as pa

_DUCKDB_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "string": "VARCHAR", "bool": "BOOLEAN"}


def compute_feature_table(
    spec: FeatureSetSpec,
    sources: "Mapping[str, pa.Table]",
    where: str,
    tenant: str,
    limits: SqlLimits,
    *,
    dry_run: bool = False,
) -> "pd.DataFrame":
    """Run the team's SQL in the sandbox over its declared sources; cast to declared types.

    `sources` are the tables the platform read for it (exactly `spec.sources`); the SQL sees
    nothing else, and the whole of it, the fetch of the result included, runs within `limits`
    (see features/sandbox.py). Column names are identifiers (specs.Identifier), so quoting them
    in the platform's own SQL below is safe.
    """

    def refuse(reason: str) -> PlatformConfigError:
        return PlatformConfigError(
            where, "attributes.sql", f"feature set '{tenant}/{spec.name}': {reason}"
        )

    required = [spec.entity.join_key, spec.timestamp_field]
    if spec.created_timestamp_field:
        required.append(spec.created_timestamp_field)
    casts = ", ".join(
        f'cast("{n}" as {_DUCKDB_TYPES[t]}) as "{n}"' for n, t in spec.features.items()
    )
    keys = ", ".join(f'"{c}"' for c in required)
    try:
        tables = {name: sources[name] for name in spec.sources}
        with sandbox(tables, limits, dry_run=dry_run) as box:
            relation = box.query(spec.sql)
            missing = [c for c in [*required, *spec.features] if c not in relation.columns]
            if missing:
                raise refuse(
                    f"the query does not return column(s) {', '.join(missing)} "
                    f"(it returns {', '.join(relation.columns)})"
                )
            # A projection of the relation, not a query over it: DuckDB plans the team's SQL
            # once more only, to fetch it, not once per call.
            return relation.project(
                f'{keys}, {casts}, cast("{spec.timestamp_field}" as timestamp) '
                f'as "{spec.timestamp_feature}"'
            ).df()
    except SandboxError as exc:
        raise refuse(str(exc)) from exc


_ARROW_TYPES = {
    "string": "string",
    "int64": "int64",
    "float64": "float64",
    "bool": "bool_",
    "timestamp": "timestamp",
}


def dry_run(catalog: TenantCatalog, spec: FeatureSetSpec) -> None:
    """Run a feature set's SQL in the sandbox over empty tables shaped like its declared sources:
    what `mlplat validate` does, so a refused query fails before any run, and one that does not
    end gives up at limits.yaml's `sql.dry_run_timeout_s`."""
    import pyarrow as pa

    check_source_refs(catalog, spec)

    def arrow(kind: str) -> pa.DataType:
        return pa.timestamp("us") if kind == "timestamp" else getattr(pa, _ARROW_TYPES[kind])()

    tables = {
        name: pa.schema(
            [(c, arrow(t)) for c, t in catalog.sources[name].columns.items()]
        ).empty_table()
        for name in spec.sources
    }
    where = str(catalog.file_of("feature_set", spec.name))
    tenant = catalog.tenant
    limits = sql_limits(tenant.name, tenant.resources)
    compute_feature_table(spec, tables, where, tenant.name, limits, dry_run=True)


def feature_assets(
    catalog: TenantCatalog, spec: FeatureSetSpec, placement: Placement | None = None
) -> list[dg.AssetsDefinition]:
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
        placement=placement,
        freshness=spec.freshness,
    )
    key = kwargs["key"]

    @team_asset(
        **kwargs,
        deps=[dg.AssetKey([tenant.name, "sources", s]) for s in spec.sources],
        check_specs=[
            expectations_check(key),
        ],
        automation_condition=scheduled_condition(catalog, spec),
    )
    def feature_asset(lake: LakeResource, feast: FeastResource, pricing: PricingResource):
        with meter(tenant.name, tenant.resources, pricing.catalog()) as usage:
            import pyarrow as pa

            from platform_assets.features.offline_store import layout_for_join

            # The platform reads the declared sources, from this tenant's prefix only, by the
            # version committed now, which it records beside the table.
            read = {s: lake.current(tenant.name, "sources", s).version for s in spec.sources}
            sources = {s: lake.read(tenant.name, "sources", s, v) for s, v in read.items()}
            limits = sql_limits(tenant.name, tenant.resources)
            df = compute_feature_table(spec, sources, str(where), tenant.name, limits)
            # Sorted by key and event time, and marked so, for the store's sort-free join.
            table = layout_for_join(
                pa.Table.from_pandas(df, preserve_index=False),
                [spec.entity.join_key],
                spec.timestamp_field,
                spec.created_timestamp_field,
            )
            # Committed only with its inputs beside it: no table without its lineage.
            snapshot = lake.write(tenant.name, "features", spec.name, table, commit=False)
            record_inputs(lake, snapshot, read)
            lake.commit(snapshot)
            entity, view = feature_view(
                tenant.name, tenant.owners[0], spec, snapshot.uri, lake.s3_endpoint()
            )
            apply(feast.store(tenant.name), [entity, view])
            quality = expectation_check(df, spec.expectations, f"{tenant.name}_{spec.name}")
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(snapshot.version),
            metadata={
                "dagster/row_count": len(df),
                "uri": snapshot.uri,
                "data_version": snapshot.version,
                "entities": int(df[spec.entity.join_key].nunique()),
                "source_versions": dg.MetadataValue.json(read),
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
    project, and runs the YAML's expectations as a blocking check. The asset
    `<tenant>/online/<name>` copies its new rows into the online store (serving/online.py).
    """
