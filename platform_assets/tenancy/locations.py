"""The workspace's code locations: `platform`, then one per tenant folder (or platform group).

Each location is its own process, so a tenant folder that fails to load fails only its own
location. Which tenants share a location is the platform's call (`limits/locations.yaml`), never
a tenant's. `workspace.yaml` is rendered from this list by `mlplat workspace write`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from platform_assets.tenancy.catalog import (
    PYCACHE,
    check_folder_name,
    defs_root,
    folder_name_problem,
)
from platform_assets.tenancy.isolation import PLATFORM
from platform_assets.tenancy.strict_yaml import PlatformConfigError, YamlError, read_document

MODULE = "platform_assets.locations"
GROUPS_FILE = Path(__file__).resolve().parents[1] / "limits" / "locations.yaml"
WORKSPACE_FILE = Path(__file__).resolve().parents[2] / "workspace.yaml"


@dataclass(frozen=True)
class CodeLocation:
    """A code location: its name and the tenants whose folders it loads (none for `platform`)."""

    name: str
    tenants: tuple[str, ...]

    @property
    def module(self) -> str:
        return MODULE

    @property
    def attribute(self) -> str:
        return self.name


def tenant_folders(root: Path | None = None) -> list[str]:
    """Tenant names as the folders under the defs root say, without parsing any of them; a
    folder whose name is no tenant name is left out (`skipped_folders` says why)."""
    return sorted(name for name in _folder_names(root) if folder_name_problem(name) is None)


def skipped_folders(root: Path | None = None) -> dict[str, str]:
    """Folders under the defs root that name no tenant -> why. The platform location loads
    without them (and says so); `mlplat validate` and `dg check defs` refuse them."""
    problems = {name: folder_name_problem(name) for name in _folder_names(root)}
    return {name: problem for name, problem in sorted(problems.items()) if problem is not None}


def _folder_names(root: Path | None) -> list[str]:
    root = root or defs_root()
    return [p.name for p in root.iterdir() if p.is_dir() and p.name != PYCACHE]


def location_groups(path: Path = GROUPS_FILE) -> dict[str, tuple[str, ...]]:
    """Platform-configured groups: location name -> the tenants it loads together."""
    try:
        doc = read_document(path) if path.exists() else None
    except YamlError as exc:
        raise PlatformConfigError(path, exc.field, exc.reason) from exc
    groups = (doc or {}).get("groups") or {}
    if not isinstance(groups, dict):
        raise PlatformConfigError(path, "groups", "must map a location name to a tenant list")
    seen: dict[str, str] = {}
    out = {}
    for name, tenants in groups.items():
        if name == PLATFORM:
            raise PlatformConfigError(path, f"groups.{name}", "the name is the platform's own")
        problem = folder_name_problem(str(name))
        if problem is not None:  # it becomes a code location (and module attribute) name
            raise PlatformConfigError(path, f"groups.{name}", problem)
        if not isinstance(tenants, list) or not tenants:
            raise PlatformConfigError(path, f"groups.{name}", "must be a non-empty tenant list")
        for tenant in tenants:
            if tenant in seen:
                raise PlatformConfigError(
                    path,
                    f"groups.{name}",
                    f"tenant {tenant!r} is already in group {seen[tenant]!r}",
                )
            seen[tenant] = name
        out[str(name)] = tuple(str(t) for t in tenants)
    return out


@cache
def location_of(tenant: str) -> str:
    """The code location that loads `tenant`: the platform group it is in, else its own (what
    Dagster labels its pods `dagster/code-location` with). Read once per process, as the code
    server reads the groups once."""
    for name, members in location_groups(GROUPS_FILE).items():
        if tenant in members:
            return name
    return tenant


def _checked_groups(root: Path, groups_file: Path) -> dict[str, tuple[str, ...]]:
    """The platform's groups, each naming only existing tenant folders, none a tenant's name."""
    groups = location_groups(groups_file)
    for name, members in groups.items():
        missing = [t for t in members if not _is_tenant_folder(root, t)]
        if missing:
            raise PlatformConfigError(
                groups_file,
                f"groups.{name}",
                f"no tenant folder for {', '.join(map(repr, missing))} under {root}",
            )
        if name not in members and _is_tenant_folder(root, name):
            raise PlatformConfigError(
                groups_file, f"groups.{name}", f"the name is tenant {name!r}'s own location"
            )
    return groups


def code_locations(root: Path | None = None, groups_file: Path = GROUPS_FILE) -> list[CodeLocation]:
    """The platform location first, then one per tenant or group, in name order."""
    root = root or defs_root()
    groups = _checked_groups(root, groups_file)
    grouped = {t for members in groups.values() for t in members}
    locations = [CodeLocation(n, m) for n, m in groups.items()]
    locations += [CodeLocation(t, (t,)) for t in tenant_folders(root) if t not in grouped]
    return [CodeLocation(PLATFORM, ()), *sorted(locations, key=lambda loc: loc.name)]


class UnknownLocation(PlatformConfigError, AttributeError):
    """No code location has this name and the workspace declares none. Also an AttributeError:
    `platform_assets.locations` is a module whose attributes are the locations, and whoever
    looks an attribute up on every module in `sys.modules` (pickle's `whichmodule`, finding
    where scipy's `agm` lives) must hear "no such attribute", not a failure."""


def declared_locations(workspace: Path = WORKSPACE_FILE) -> set[str]:
    """The location names `workspace.yaml` lists."""
    if not workspace.exists():
        return set()
    entries = yaml.safe_load(workspace.read_text()).get("load_from") or []
    return {e["python_module"]["location_name"] for e in entries if "python_module" in e}


def location_named(
    name: str, root: Path | None = None, groups_file: Path = GROUPS_FILE
) -> CodeLocation:
    """The location `name`; a clear error when its tenant folder is gone (renamed, deleted).

    What a location's own code server asks at start: the same answer as `code_locations`, from
    the platform's groups and `name`'s folder only, without listing every other tenant's.
    """
    root = root or defs_root()
    groups = _checked_groups(root, groups_file)
    if name == PLATFORM:
        return CodeLocation(PLATFORM, ())
    if name in groups:
        return CodeLocation(name, groups[name])
    grouped = {t for members in groups.values() for t in members}
    if name not in grouped and _is_tenant_folder(root, name):
        return CodeLocation(name, (name,))
    if "/" not in name and (root / name).is_dir():
        check_folder_name(root / name)  # a folder, but no tenant's: say why
    root = root.resolve()
    # A location the workspace declares whose folder is gone fails with the reason, which the
    # UI shows; any other name is just not an attribute of `platform_assets.locations`.
    error = PlatformConfigError if name in declared_locations() else UnknownLocation
    raise error(
        root / name,
        "<code location>",
        f"code location {name!r} has no tenant folder {root / name} (tenant folders: "
        f"{', '.join(tenant_folders(root)) or 'none'}); a renamed or removed tenant needs "
        "`mlplat workspace write` and a workspace reload",
    )


def _is_tenant_folder(root: Path, name: str) -> bool:
    """What `tenant_folders` would list, asked of one name."""
    return folder_name_problem(name) is None and (root / name).is_dir()


def render_workspace(root: Path | None = None) -> str:
    """`workspace.yaml` for these locations: each loads in its own process."""
    entries = [
        {
            "python_module": {
                "module_name": loc.module,
                "attribute": loc.attribute,
                "location_name": loc.name,
            }
        }
        for loc in code_locations(root)
    ]
    head = "# Written by `mlplat workspace write` from the tenant folders; do not edit.\n"
    return head + yaml.safe_dump({"load_from": entries}, sort_keys=False)
