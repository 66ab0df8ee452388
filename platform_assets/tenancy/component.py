"""The `Tenant` component (a team's identity, people and where its steps run), and `Tenants`."""

import dagster as dg

from platform_assets.tenancy.assets import TeamComponent
from platform_assets.tenancy.catalog import PlatformConfigError, tenant_folder_of
from platform_assets.tenancy.specs import TenantSpec


class Tenant(TeamComponent, TenantSpec):
    """One tenant (team). Exactly one per tenant folder, named like the folder.

    Builds the tenant's daily cost asset `<tenant>/cost`; its owners, roles and shares are read
    by every other component of the folder through the catalog.
    """

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from platform_assets.cost.assets import tenant_cost_asset

        spec = TenantSpec.model_validate(self.model_dump())
        folder = tenant_folder_of(context.path)
        if spec.name != folder.name:
            raise PlatformConfigError(
                context.path / "defs.yaml",
                "attributes.name",
                f"{spec.name!r} must equal its folder {folder.name!r}",
            )
        return dg.Definitions(assets=[tenant_cost_asset(spec, context.path / "defs.yaml")])


class Tenants(TeamComponent, dg.Resolvable, dg.Model):
    """Every tenant folder below this one, built by the platform from its catalog.

    The defs root's own `defs.yaml` (platform-owned) declares this component, so `dg check defs`
    and `dg list defs` never walk the tenant folders with Dagster's loader, which would import a
    `.py` file or render a template before the catalog could refuse it. They check every
    tenant's YAML exactly as the code location does.
    """

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from platform_assets.tenancy.catalog import load_all
        from platform_assets.tenancy.loader import catalog_definitions

        return catalog_definitions(load_all(context.path))
