"""The tenants' catalogs as governance reads them: each folder parsed on first use, so a broken
tenant never stops the governance of another."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from platform_assets.tenancy.catalog import (
    TenantCatalog,
    defs_root,
    load_tenant,
)
from platform_assets.tenancy.locations import tenant_folders


class TenantCatalogs(Mapping[str, TenantCatalog]):
    """Tenant folders parsed on first use. A folder that does not load raises only when its own
    tenant is asked for, and is left out when iterating, so a broken tenant never stops the
    governance of another (its own code location shows the error). Each tenant is looked up once
    per object: `governance_for` builds one per sensor tick, job step or command."""

    def __init__(self, root: Path | None = None):
        self.root = (root or defs_root()).resolve()
        self._found: dict[str, TenantCatalog] = {}

    def __getitem__(self, name: str) -> TenantCatalog:
        if name not in self._found:
            if name not in tenant_folders(self.root):
                raise KeyError(name)
            self._found[name] = load_tenant(self.root / name)
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        for name in tenant_folders(self.root):
            try:
                load_tenant(self.root / name)
            except (ValueError, OSError):
                continue
            yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)
