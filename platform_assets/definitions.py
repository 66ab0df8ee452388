"""Every location's definitions in one, for Dagster's single-location tools.

The workspace runs one code location per tenant plus `platform` (`platform_assets.locations`,
listed in workspace.yaml). `dg check defs`, `dg list defs`, `dagster definitions validate` and
the graph snapshot check one project, so `[tool.dg]` points here: the same tenant and platform
definitions, merged, with every tenant's YAML loaded and cross-checked.
"""

import dagster as dg

from platform_assets.composition.locations import all_locations


@dg.definitions
def defs() -> dg.Definitions:
    return all_locations()
