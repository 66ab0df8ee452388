"""Builds every tenant's assets from the catalog in one pass.

Dagster's component tree loads each `defs.yaml` on its own: it re-parses the file with source
positions, resolves every field as a template and walks the whole declaration tree once per file,
so loading grows with the square of the number of files (11x a plain `Definitions` at 100
tenants, see docs/benchmarks.md). The catalog has already parsed and cross-checked the same files
into specs, so the code location builds the same assets from them directly, through the same
functions the components call. `dg check defs` and `dg list defs` load the same catalog through
the defs root's `Tenants` component; a test holds the catalog's graph equal to the per-file
component tree's.

Team folders hold only the platform's component types (the catalog refuses anything else), so
there is nothing only Dagster's loader could build.
"""

from __future__ import annotations

import dagster as dg

from platform_assets.tenancy.catalog import TenantCatalog


def tenant_assets(catalog: TenantCatalog) -> list:
    """One tenant's cost asset, sources, feature sets (with their online features) and models,
    in file order."""
    from platform_assets.cost.assets import tenant_cost_asset
    from platform_assets.features.component import feature_assets
    from platform_assets.models.component import model_assets
    from platform_assets.serving.online import online_assets
    from platform_assets.sources.component import source_assets

    tenant = catalog.tenant
    return [
        tenant_cost_asset(tenant, catalog.file_of("tenant", tenant.name)),
        *[a for spec in catalog.sources.values() for a in source_assets(catalog, spec)],
        *[a for spec in catalog.feature_sets.values() for a in feature_assets(catalog, spec)],
        *[a for spec in catalog.feature_sets.values() for a in online_assets(catalog, spec)],
        *[a for spec in catalog.models.values() for a in model_assets(catalog, spec)],
    ]


def catalog_definitions(catalogs: dict[str, TenantCatalog]) -> dg.Definitions:
    return dg.Definitions(assets=[a for c in catalogs.values() for a in tenant_assets(c)])
