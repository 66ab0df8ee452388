"""Tenant isolation rules applied to the built definitions and to every lake write.

A tenant's asset may depend on its own assets and on feature views another tenant shares with it
in YAML; a tenant step writes only under `<lake root>/<tenant>/` (a local path or a URI). The
YAML catalog refuses bad feature references early; `check_isolation` is the last word, over the
asset graph as built.
An asset belongs to the tenant folder the platform built it from (the team YAML it links to),
not to whatever its key or tags say.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import dagster as dg

from platform_assets.tenancy.catalog import defs_root, load_all, tenant_folder_of
from platform_assets.tenancy.specs import TenantSpec

PLATFORM = "platform"


class IsolationError(ValueError):
    """A tenant reaching into another tenant's assets or storage."""


def _shared(owner: TenantSpec, dep: dg.AssetKey, reader: str) -> bool:
    if len(dep.path) != 3 or dep.path[1] != "features":
        return False
    return any(s.feature_set == dep.path[2] and reader in s.tenants for s in owner.shares)


def isolation_violations(
    graph_edges: list[tuple[dg.AssetKey, dg.AssetKey]], tenants: dict[str, TenantSpec]
) -> list[str]:
    """One message per (asset, dependency) edge that crosses tenants without a share."""
    problems = []
    for key, dep in graph_edges:
        tenant, owner = key.path[0], dep.path[0]
        if tenant == PLATFORM or tenant == owner:
            continue  # platform assets (cost, showback) read every tenant by design
        asset, dep_name = key.to_user_string(), dep.to_user_string()
        if owner not in tenants:
            problems.append(
                f"asset '{asset}' of tenant {tenant!r} depends on '{dep_name}', which belongs "
                f"to {owner!r}, not a tenant: tenant assets may depend only on tenant assets"
            )
        elif not _shared(tenants[owner], dep, tenant):
            problems.append(
                f"asset '{asset}' of tenant {tenant!r} depends on '{dep_name}' of tenant "
                f"{owner!r}, which {owner!r} does not share with {tenant!r} "
                f"(only feature views listed under its YAML's `shares` may be read)"
            )
    return problems


def built_from(node, folders: dict[str, str], root: str) -> tuple[str, str] | None:
    """(tenant folder, file) of the team YAML the platform built an asset from, if any.

    `folders` caches file -> tenant folder across the assets of one check; `root` is the
    resolved defs root.
    """
    refs = node.metadata.get("dagster/code_references")
    for ref in refs.code_references if refs is not None else []:
        if isinstance(ref, dg.LocalFileCodeReference):
            file = ref.file_path
            if file not in folders:
                folders[file] = _folder_of(file, root)
            return folders[file], file
    return None


def _folder_of(file: str, root: str) -> str:
    """The tenant folder (first folder below `root`) holding `file`.

    The catalog reads team files only from the resolved defs root and refuses every symlink
    in a tenant folder, so a file's normalized absolute path is its real one and the folder is
    read from the path alone; any other path is resolved on disk (and refused if outside).
    """
    prefix = root.rstrip(os.sep) + os.sep
    absolute = os.path.abspath(file)
    rest = absolute[len(prefix) :] if absolute.startswith(prefix) else ""
    if os.sep in rest:
        return rest.split(os.sep, 1)[0]
    return tenant_folder_of(Path(file)).name


def check_isolation(defs: dg.Definitions, tenants: dict[str, TenantSpec] | None = None) -> None:
    """Raise IsolationError naming both tenants and the asset for every cross-tenant edge.

    Each asset that runs here is judged as the tenant whose folder it was built from; one built
    by the platform itself (no team YAML) must live under `platform/`. Assets only declared here
    (another location's, seen as dependencies) are judged where they run.
    """
    if tenants is None:
        tenants = {name: cat.tenant for name, cat in load_all().items()}

    graph = defs.resolve_asset_graph()
    edges, folders, root = [], {}, str(defs_root().resolve())
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        origin = built_from(node, folders, root)
        if origin is None:
            if not node.is_executable:
                continue
            if key.path[0] != PLATFORM:
                raise IsolationError(
                    f"asset '{name}' was not built from any tenant folder, so it is the "
                    f"platform's and must live under '{PLATFORM}/'"
                )
            folder = PLATFORM
        else:
            folder, file = origin
            if key.path[0] != folder:
                raise IsolationError(
                    f"asset '{name}' was built from tenant {folder!r}'s {file} but its key "
                    f"is under {key.path[0]!r}: a tenant's assets live under its own name"
                )
        tag = node.tags.get("tenant")
        if tag is not None and tag != folder:
            raise IsolationError(
                f"asset '{name}' is tagged tenant={tag!r} but belongs to {folder!r} (the folder "
                "it was built from): a tenant's assets carry its own tag"
            )
        edges += [(key, parent) for parent in sorted(node.parent_keys)]
    problems = isolation_violations(edges, tenants)
    if problems:
        raise IsolationError("tenant isolation: " + "; ".join(problems))


def _step_tenants() -> set[str] | None:
    """Tenants of the assets the current step materializes; None outside a step or op-only."""
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None
    if not context.has_assets_def:
        return None
    return {key.path[0] for key in context.selected_asset_keys}


def _normalized(location: str | Path) -> str:
    """A local path resolved (symlinks too); a URI with `.` and `..` segments folded."""
    text = str(location)
    scheme, sep, rest = text.partition("://")
    if sep and scheme != "file":
        return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return str(Path(rest if sep else text).resolve())


def check_write(root: str | Path, tenant: str, target: str | Path) -> None:
    """A write must land under `<root>/<tenant>/`, by a step of that tenant (or the platform).

    `root` and `target` are local paths or URIs of one filesystem (`s3://bucket/lake/...`).
    """
    prefix = _normalized(f"{str(root).rstrip('/')}/{tenant}")
    path = _normalized(target)
    if not path.startswith(prefix.rstrip("/") + "/"):
        raise IsolationError(f"write to {target} is outside tenant {tenant!r}'s prefix {prefix}")
    writers = _step_tenants()
    if writers is None:
        return
    strangers = sorted(writers - {tenant})
    if strangers:
        raise IsolationError(
            f"a step of tenant {strangers[0]!r} may not write under tenant {tenant!r}'s prefix "
            f"{prefix} (asset(s) of {', '.join(repr(s) for s in strangers)} write only under "
            "their own)"
        )
