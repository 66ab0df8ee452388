"""Each tenant's YAML on the cluster: one ConfigMap per tenant folder, mounted read-only under
the defs root (`/etc/mlplat/defs`) of the pods that read it. The image carries no tenant YAML,
so a tenant's pull request changes only its ConfigMap, and rolls only its own code location.

ConfigMap keys cannot hold `/`: each file's key is its path relative to the tenant folder with
`/` as `--` (and any other character a key may not hold as `-<hex of its UTF-8 bytes>`, so no
two paths share a key); the volume's `items` put each key back at its path.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platform_assets.k8s.config import k8s_name
from platform_assets.tenancy.catalog import (
    CODE_MANIFEST,
    TEAM_CODE,
    TenantCatalog,
    check_model_refs,
    defs_root,
    load_tenant,
)
from platform_assets.tenancy.isolation import PLATFORM
from platform_assets.tenancy.locations import CodeLocation, tenant_folders
from platform_assets.tenancy.strict_yaml import PlatformConfigError

DEFS_MOUNT = "/etc/mlplat/defs"  # the image's MLPLAT_DEFS_ROOT
VOLUME = "defs"
CHECKSUM_ANNOTATION = "mlplat/defs-checksum"
# The API server refuses a ConfigMap whose keys and values together exceed 1 MiB.
CONFIGMAP_BYTES = 1024 * 1024
KEY_LIMIT = 253
KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._")


def configmap_key(relative: str) -> str:
    """The ConfigMap key of a file at `relative` (a POSIX path below the tenant folder)."""
    out = []
    for char in relative:
        if char in KEEP:
            out.append(char)
        elif char == "/":
            out.append("--")
        else:
            out.extend(f"-{byte:02x}" for byte in char.encode())
    return "".join(out)


@dataclass(frozen=True)
class DefsConfigMap:
    """The files of one tenant folder (all of them, or only those another tenant reads) as the
    ConfigMap `name` holds them. `files`: path below the tenant folder -> bytes."""

    tenant: str
    name: str
    files: dict[str, bytes]

    @property
    def checksum(self) -> str:
        digest = hashlib.sha256()
        for path, content in sorted(self.files.items()):
            for part in (path.encode(), content):
                digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()

    def chart_values(self) -> dict[str, Any]:
        """This ConfigMap in our tenant chart's `definitions` (UTF-8 files as `data`, any
        other as base64 `binaryData`, byte for byte either way)."""
        data, binary = {}, {}
        for path, content in sorted(self.files.items()):
            try:
                data[configmap_key(path)] = content.decode()
            except UnicodeDecodeError:
                binary[configmap_key(path)] = base64.b64encode(content).decode()
        return {
            "name": self.name,
            "tenant": self.tenant,
            "checksum": self.checksum,
            "data": data,
            "binaryData": binary,
        }

    def projection(self) -> dict[str, Any]:
        """This ConfigMap as a source of the defs volume: each key at `<tenant>/<path>`."""
        items = [
            {"key": configmap_key(path), "path": f"{self.tenant}/{path}"}
            for path in sorted(self.files)
        ]
        return {"configMap": {"name": self.name, "items": items}}


def _carried(relative: Path) -> bool:
    """Whether a tenant folder's file goes into its ConfigMap: everything but the team's code."""
    if relative.parts[0] != TEAM_CODE:
        return True
    return len(relative.parts) == 2 and relative.name in CODE_MANIFEST


def folder_configmap(
    folder: Path, name: str | None = None, only: set[str] | None = None
) -> DefsConfigMap:
    """The ConfigMap of a tenant folder (`only`: just these paths below it); refused, naming
    the folder, when it would exceed the 1 MiB a ConfigMap may hold. Of the team's `code/`
    only its manifest is in it (`CODE_MANIFEST`, which names the tenant's trainer image): the
    sources ship in that image, and the code location never reads them."""
    tenant = folder.name
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and _carried(path.relative_to(folder))
        and (only is None or path.relative_to(folder).as_posix() in only)
    }
    size = sum(len(configmap_key(p)) + len(content) for p, content in files.items())
    if size > CONFIGMAP_BYTES:
        raise PlatformConfigError(
            folder,
            "<folder>",
            f"the tenant folder holds {size} bytes of files, more than the {CONFIGMAP_BYTES} "
            "(1 MiB) one Kubernetes ConfigMap can carry to its code location: split it or "
            "remove what it does not need",
        )
    for path in files:
        if len(configmap_key(path)) > KEY_LIMIT:
            raise PlatformConfigError(
                folder / path,
                "<file>",
                f"the path is too long for a ConfigMap key (at most {KEY_LIMIT} characters)",
            )
    return DefsConfigMap(tenant, name or f"mlplat-defs-{k8s_name(tenant)}", files)


def _shared_files(owner: TenantCatalog, feature_set: str) -> set[str] | None:
    """What a reader's location reads of `owner`'s folder for one shared feature set: its
    Tenant and that feature set, where the platform's layout puts them (`shared_tenant`,
    `shared_feature_set`); None (the whole folder) for any other layout."""
    wanted = {
        owner.file_of("tenant", owner.tenant.name): "tenant/defs.yaml",
        owner.file_of("feature_set", feature_set): f"features/{feature_set}/defs.yaml",
    }
    found = {path.relative_to(owner.folder).as_posix(): path for path in wanted}
    return set(found) if set(found) == set(wanted.values()) else None


def location_configmaps(location: CodeLocation, root: Path | None = None) -> list[DefsConfigMap]:
    """The ConfigMaps a location's pods mount: the platform's, every tenant's; a tenant
    location's, its tenants' and what it reads of another tenant's shared feature sets."""
    root = (root or defs_root()).resolve()
    if location.name == PLATFORM:
        return [folder_configmap(root / name) for name in tenant_folders(root)]
    catalogs = {t: load_tenant(root / t) for t in location.tenants}
    maps = [folder_configmap(catalogs[t].folder) for t in location.tenants]
    shared: dict[str, set[str] | None] = {}
    for catalog in catalogs.values():
        for model in catalog.models.values():
            for owner, fs in check_model_refs(catalog, model).values():
                if owner in catalogs or (owner in shared and shared[owner] is None):
                    continue
                files = _shared_files(load_tenant(root / owner), fs.name)
                shared[owner] = None if files is None else shared.get(owner, set()) | files
    for owner, files in sorted(shared.items()):
        name = f"mlplat-defs-{k8s_name(owner)}-shared-{k8s_name(location.name)}"
        maps.append(folder_configmap(root / owner, name, files))
    return maps


def defs_volume(maps: list[DefsConfigMap]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volume mount) of the defs root: one projected volume of these ConfigMaps.

    One volume rather than one per tenant: the kubelet writes a ConfigMap volume's files behind
    its own links (`..data`), and the catalog refuses links inside a tenant folder; in one
    projected volume every tenant folder is a real folder below `..data`, which `defs_root`
    reads through. Not `subPath`: the kubelet updates these files in place when a ConfigMap
    changes (a subPath mount never would)."""
    volume = {"name": VOLUME, "projected": {"sources": [m.projection() for m in maps]}}
    mount = {"name": VOLUME, "mountPath": DEFS_MOUNT, "readOnly": True}
    return volume, mount


def defs_checksum(maps: list[DefsConfigMap]) -> str:
    """One digest of every file these ConfigMaps carry: the pod-template annotation that rolls
    a tenant's code location when, and only when, its files change."""
    digest = hashlib.sha256()
    for m in sorted(maps, key=lambda m: m.name):
        digest.update(f"{m.name}={m.checksum};".encode())
    return digest.hexdigest()
