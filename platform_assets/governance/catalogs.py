"""The tenants' catalogs as governance reads them: each folder as it is now, parsed on first use,
so a model added to a running deployment is governed without a restart and a broken tenant never
stops the governance of another."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from platform_assets.tenancy.catalog import (
    TenantCatalog,
    defs_root,
    folder_stamp,
    read_tenant,
)
from platform_assets.tenancy.locations import tenant_folders

# tenant name -> (its folder, the folder's stamp when read, what was read). Per process: the
# sensor, the gateway and the serving app live long and must see a model added after they
# started, while a folder that did not change is not parsed again (a stamp is one stat per file).
# Keyed by name, so a folder read through a new path (the kubelet's swapped `..data`) replaces
# the old entry; a folder that fails to load is not kept and is read again on the next look.
_READ: dict[str, tuple[Path, tuple, TenantCatalog]] = {}


def current_tenant(folder: Path) -> TenantCatalog:
    """The tenant folder's catalog as its files are now; parsed again only when one changed."""
    # Stamped before reading: a file changed while it is read is read again next time.
    stamp = folder_stamp(folder)
    seen = _READ.get(folder.name)
    if seen is not None and seen[0] == folder and seen[1] == stamp:
        return seen[2]
    catalog = read_tenant(folder)
    _READ[folder.name] = (folder, stamp, catalog)
    return catalog


class TenantCatalogs(Mapping[str, TenantCatalog]):
    """Tenant folders read on first use, as they are at that moment. A folder that does not load
    raises only when its own tenant is asked for, and is left out when iterating, so a broken
    tenant never stops the governance of another (its own code location shows the error). Each
    tenant is looked up once per object: `governance_for` builds one per sensor tick, job step or
    command."""

    def __init__(self, root: Path | None = None):
        self.root = (root or defs_root()).resolve()
        self._found: dict[str, TenantCatalog] = {}
        # A folder that failed to load, failed once per object: a tick asking about each of a
        # broken tenant's evaluations does not parse its folder again for every one.
        self._failed: dict[str, ValueError | OSError] = {}

    def __getitem__(self, name: str) -> TenantCatalog:
        if name in self._failed:
            raise self._failed[name]
        if name not in self._found:
            if name not in tenant_folders(self.root):
                raise KeyError(name)
            try:
                self._found[name] = current_tenant(self.root / name)
            except (ValueError, OSError) as exc:
                self._failed[name] = exc
                raise
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        for name in tenant_folders(self.root):
            try:
                self[name]
            except (ValueError, OSError):
                continue
            yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)
