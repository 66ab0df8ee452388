"""Builds every tenant's assets from the catalog in one pass.

Dagster's component tree loads each `defs.yaml` on its own: it re-parses the file with source
positions, resolves every field as a template and walks the whole declaration tree once per file,
so loading grows with the square of the number of files (11x a plain `Definitions` at 100
tenants, see docs/benchmarks.md). The catalog has already parsed and cross-checked the same files
into specs, so the code location builds the same assets from them directly, through the same
functions the components call. `dg check defs` and `dg list defs` still load the folder through
the components, and a test holds the two graphs equal.

A tenant folder holding anything only Dagster's loader understands (another component type, a
Python module, a template, post-processing) makes `tenant_definitions` use the component tree.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from platform_assets.tenancy.catalog import TenantCatalog


def dagster_only_files(root: Path, catalogs: dict[str, TenantCatalog]) -> list[Path]:
    """Files that need Dagster's component loader, in the defs root or any tenant folder."""
    top = [p for p in root.iterdir() if p.is_file() and p.suffix in (".py", ".yaml", ".yml")]
    return sorted(top) + [p for c in catalogs.values() for p in c.dagster_only]


def tenant_assets(catalog: TenantCatalog) -> list:
    """One tenant's cost asset, sources, feature sets and models, in file order."""
    from platform_assets.cost.assets import tenant_cost_asset
    from platform_assets.features.component import feature_assets
    from platform_assets.models.component import model_assets
    from platform_assets.sources.component import source_assets

    tenant = catalog.tenant
    return [
        tenant_cost_asset(tenant, catalog.file_of("tenant", tenant.name)),
        *[a for spec in catalog.sources.values() for a in source_assets(catalog, spec)],
        *[a for spec in catalog.feature_sets.values() for a in feature_assets(catalog, spec)],
        *[a for spec in catalog.models.values() for a in model_assets(catalog, spec)],
    ]


def catalog_definitions(catalogs: dict[str, TenantCatalog]) -> dg.Definitions:
    return dg.Definitions(assets=[a for c in catalogs.values() for a in tenant_assets(c)])
