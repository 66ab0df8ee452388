"""The `Tenant` component: a team's identity, people and where its steps run.

Vocabulary only, like every team component: the defs root's `Tenants` component
(platform_assets/composition/component.py) builds each tenant folder from the catalog.
"""

from platform_assets.tenancy.assets import TeamComponent
from platform_assets.tenancy.specs import TenantSpec


class Tenant(TeamComponent, TenantSpec):
    """One tenant (team). Exactly one per tenant folder, named like the folder.

    Its tenant gets a daily cost asset `<tenant>/cost`; its owners, roles and shares are read by
    every other component of the folder through the catalog.
    """
