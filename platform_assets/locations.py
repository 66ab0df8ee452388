"""The workspace's code locations, one Definitions per attribute: `platform` and each tenant.

`dagster api grpc --module-name platform_assets.locations --attribute ridehail` builds only
ridehail's location (PEP 562 module `__getattr__`), so each location is its own process and a
tenant folder that fails to load fails only its own. The module defines no other public name,
so none can shadow a tenant's. The list of locations: platform_assets/tenancy/locations.py.
"""

from platform_assets.composition.locations import location_definitions


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)

    return location_definitions(name)
