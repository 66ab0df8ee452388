"""`Tenants`: the component the defs root's own `defs.yaml` declares, so Dagster's loader builds
every tenant folder exactly as the code locations do."""

import dagster as dg

from platform_assets.composition.locations import all_locations
from platform_assets.tenancy.assets import TeamComponent


class Tenants(TeamComponent, dg.Resolvable, dg.Model):
    """Every tenant folder below this one, built by the platform from its catalog.

    The defs root's own `defs.yaml` (platform-owned) declares this component, so `dg check defs`
    and `dg list defs` never walk the tenant folders with Dagster's loader, which would import a
    `.py` file or render a template before the catalog could refuse it. They get every
    location's definitions, merged, from the same catalog and the same code as the workspace.
    """

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return all_locations(context.path)
