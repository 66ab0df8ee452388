"""Reads every tenant's YAML into typed specs and checks what one file cannot check alone.

Components build assets one file at a time; a model must still point at feature sets that exist
and a tenant may only read what another tenant shares with it. This module answers those
questions from the files themselves, without Dagster, so the CLI can use it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ValidationError

from platform_assets.tenancy.limits import (
    NAMESPACE_PREFIX,
    check_promotion_minimums,
    check_retrain_cooldown,
    namespace_for,
)
from platform_assets.tenancy.specs import (
    LIMITS_FILE,
    NAME_RE,
    ROLES,
    FeatureSetSpec,
    ModelSpec,
    SourceSpec,
    TenantSpec,
    check_name,
    check_tenant_name,
    identity_key,
)
from platform_assets.tenancy.strict_yaml import PlatformConfigError, YamlError, read_document

# Component type name (as written after `type:`) -> the spec it is validated with.
COMPONENT_SPECS: dict[str, type[BaseModel]] = {
    "platform_assets.tenancy.component.Tenant": TenantSpec,
    "platform_assets.sources.component.Source": SourceSpec,
    "platform_assets.features.component.FeatureSet": FeatureSetSpec,
    "platform_assets.models.component.Model": ModelSpec,
}


def defs_root() -> Path:
    """The folder holding one sub-folder per tenant (overridable for tests and previews).

    On Kubernetes it is a projected ConfigMap volume (k8s/defs_configmaps.py), whose files the
    kubelet keeps behind `..data`, a link it swaps to a new folder on each update: the root is
    then that link, so each call reads the current files and the links stay out of the tree."""
    override = os.environ.get("MLPLAT_DEFS_ROOT")
    root = Path(override) if override else Path(__file__).resolve().parents[1] / "defs"
    kubelet_files = root / "..data"
    return kubelet_files if kubelet_files.is_dir() else root


@dataclass
class TenantCatalog:
    tenant: TenantSpec
    folder: Path
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    feature_sets: dict[str, FeatureSetSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    files: dict[tuple[str, str], Path] = field(default_factory=dict)

    def file_of(self, kind: str, name: str) -> Path:
        return self.files[(kind, name)]


def _parse(path: Path) -> BaseModel:
    """The platform spec one `defs.yaml` declares. Team folders hold data, not code: only the
    platform's component types, with `type` and `attributes` and nothing else."""
    try:
        doc = read_document(path)
    except YamlError as exc:
        raise PlatformConfigError(path, exc.field, exc.reason) from exc
    if doc is None:
        raise PlatformConfigError(path, "<file>", "the file is empty: it must declare a component")
    if not isinstance(doc, dict):
        raise PlatformConfigError(path, "<file>", "must be a mapping with `type` and `attributes`")
    extra = sorted(set(doc) - {"type", "attributes"})
    if extra:
        raise PlatformConfigError(
            path,
            extra[0],
            "only `type` and `attributes` are allowed in team YAML (no post_processing, "
            "requirements or other Dagster component keys)",
        )
    type_name = doc.get("type")
    spec_cls = COMPONENT_SPECS.get(type_name) if isinstance(type_name, str) else None
    if spec_cls is None:
        raise PlatformConfigError(
            path,
            "type",
            f"{type_name!r} is not a platform component type; team folders may use only "
            f"{', '.join(COMPONENT_SPECS)}",
        )
    attributes = doc.get("attributes")
    if not isinstance(attributes, dict):
        raise PlatformConfigError(path, "attributes", "must be a mapping of the component's fields")
    try:
        return spec_cls.model_validate(attributes)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in ("attributes", *err["loc"]))
        raise PlatformConfigError(path, loc, err["msg"].removeprefix("Value error, ")) from exc


# The one folder of a tenant that holds code: its Python project, run only in a trainer sandbox.
TEAM_CODE = "code"
# What of it the code location needs on Kubernetes (in the tenant's ConfigMap): the files its
# trainer image is named after (models/trainers/pod.py, `environment_key`), data, not code.
CODE_MANIFEST = ("pyproject.toml", "uv.lock")


def team_files(folder: Path) -> list[Path]:
    """Every `defs.yaml` in a tenant folder; anything else there is refused with its path.

    No symlinks (a linked file is a duplicate or reaches into another folder), no Python, no
    other files: the platform builds every asset from these files itself. The one exception is
    the top-level `code/` folder, the team's own Python project (`TEAM_CODE`): it is not read
    here, and no platform process imports it; only a trainer sandbox or pod runs it
    (models/trainers/). (`os.scandir` answers "is it a link" from the directory listing,
    without a stat per entry.)
    """
    if folder.is_symlink():
        raise PlatformConfigError(folder, "<folder>", "a tenant folder may not be a symlink")
    found: list[Path] = []

    def walk(directory: str) -> None:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            if entry.is_symlink():
                raise PlatformConfigError(
                    Path(entry.path),
                    "<file>",
                    "symlinks are not allowed in a tenant folder (copy the file instead)",
                )
            if entry.name == TEAM_CODE and directory == str(folder):
                if not entry.is_dir(follow_symlinks=False):
                    raise PlatformConfigError(
                        Path(entry.path),
                        "<file>",
                        f"{TEAM_CODE} must be a folder: the team's Python project, with its "
                        "pyproject.toml (docs/trainers.md)",
                    )
            elif entry.is_dir(follow_symlinks=False):
                walk(entry.path)
            elif entry.name == "defs.yaml":
                found.append(Path(entry.path))
            elif entry.name.endswith(".py"):
                raise PlatformConfigError(
                    Path(entry.path),
                    "<file>",
                    "Python files are not allowed in a tenant folder outside its code/ project: "
                    "team code runs only as a model's trainer, from code/ (docs/trainers.md)",
                )
            else:
                raise PlatformConfigError(
                    Path(entry.path),
                    "<file>",
                    "only defs.yaml files are allowed in a tenant folder",
                )

    walk(str(folder))
    return sorted(found)


# Written by Python when a tool imports the defs package; never read, never a tenant.
PYCACHE = "__pycache__"


def folder_name_problem(name: str) -> str | None:
    """Why a folder under the defs root names no tenant, or None when it does.

    A folder's name is its tenant's name before any YAML is read: the platform location makes
    it the asset-key prefix, group, sensor, job and code location names of the tenant.
    """
    try:
        check_tenant_name(check_name(name))
    except ValueError as exc:
        return str(exc)
    return None


def check_folder_name(folder: Path) -> None:
    """Refuse a tenant folder whose name is no tenant name, naming the folder and why."""
    problem = folder_name_problem(folder.name)
    if problem is not None:
        raise PlatformConfigError(
            folder,
            "<folder>",
            f"the folder name is not a tenant name ({problem}); a tenant folder is named as "
            "its tenant: rename it",
        )


_KIND = {
    TenantSpec: "tenant",
    SourceSpec: "source",
    FeatureSetSpec: "feature_set",
    ModelSpec: "model",
}


@cache
def load_tenant(folder: Path) -> TenantCatalog:
    """`read_tenant`, once per process: a code location builds its assets from its folders as
    they were when it loaded (a deploy reloads the location)."""
    return read_tenant(folder)


def folder_stamp(root: Path) -> tuple:
    """Every file under `root` with its size and modification time: changes when a tenant
    folder, file or YAML does (a few ms for 100 tenants' 800 files). Long-lived readers compare
    stamps to know when to read the folders again."""
    stamp = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:
                continue  # removed while walking: the next look sees the rest
            stamp.append((folder, name, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def read_tenant(folder: Path) -> TenantCatalog:
    """Parse one tenant folder as it is now."""
    check_folder_name(folder)
    tenants: list[tuple[Path, TenantSpec]] = []
    others: list[tuple[Path, BaseModel]] = []
    files = team_files(folder)
    if not files:
        raise PlatformConfigError(
            folder,
            "<folder>",
            "the tenant folder is empty: it needs tenant/defs.yaml declaring its Tenant",
        )
    for path in files:
        spec = _parse(path)
        (tenants if isinstance(spec, TenantSpec) else others).append((path, spec))
    if len(tenants) != 1:
        found = ", ".join(str(p) for p, _ in tenants) or "none"
        raise PlatformConfigError(
            folder, "tenant", f"a tenant folder needs exactly one Tenant component (found {found})"
        )
    tenant_path, tenant = tenants[0]
    if tenant.name != folder.name:
        raise PlatformConfigError(
            tenant_path, "attributes.name", f"{tenant.name!r} must equal its folder {folder.name!r}"
        )
    assigned = namespace_for(tenant.name)
    if tenant.namespace != assigned:
        # Checked here, in the tenant's own location, against the platform's assignment (unique
        # by construction, see tenancy/limits.py), not against the other tenants' folders.
        raise PlatformConfigError(
            tenant_path,
            "attributes.namespace",
            f"namespace {tenant.namespace!r} is not tenant {tenant.name!r}'s: the platform "
            f"assigns it {assigned!r} ({NAMESPACE_PREFIX}<name>, or its `namespace` in "
            f"{LIMITS_FILE}), so no two tenants run in one namespace",
        )
    catalog = TenantCatalog(
        tenant=tenant,
        folder=folder,
        files={("tenant", tenant.name): tenant_path},
    )
    buckets = {
        "source": catalog.sources,
        "feature_set": catalog.feature_sets,
        "model": catalog.models,
    }
    for path, spec in others:
        kind = _KIND[type(spec)]
        name = spec.name  # type: ignore[attr-defined]
        if name in buckets[kind]:
            raise PlatformConfigError(
                path,
                "attributes.name",
                f"{kind} {name!r} is already defined in {catalog.files[(kind, name)]}",
            )
        if isinstance(spec, ModelSpec):
            check_promotion_minimums(spec, path)
            check_retrain_cooldown(tenant.name, spec, path)
            if spec.trainer is not None:
                check_trainer_code(folder, spec.trainer.entrypoint, path)
        buckets[kind][name] = spec  # type: ignore[index]
        catalog.files[(kind, name)] = path
    return catalog


def code_source_root(code: Path) -> Path:
    """Where a team project's modules live: `code/src` (the src layout) when it exists, else
    `code/` itself."""
    return code / "src" if (code / "src").is_dir() else code


def check_trainer_code(folder: Path, entrypoint: str, path: Path) -> None:
    """A model naming a trainer needs the tenant's `code/pyproject.toml` and the entrypoint's
    module file in it: checked here by file name only, without importing anything (whether the
    function exists is known only when the sandbox runs it). Where the folder holds only the
    project's manifest (`CODE_MANIFEST`: a tenant's ConfigMap on Kubernetes, whose trainer
    image holds the sources), there is no module file to look for."""
    code = folder / TEAM_CODE
    if not (code / "pyproject.toml").is_file():
        raise PlatformConfigError(
            path,
            "attributes.trainer.entrypoint",
            f"the trainer needs the tenant's Python project: {code}/pyproject.toml does not "
            "exist (docs/trainers.md)",
        )
    if all(entry.name in CODE_MANIFEST for entry in code.iterdir()):
        return
    module = entrypoint.partition(":")[0].split(".")
    base = code_source_root(code).joinpath(*module)
    if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
        raise PlatformConfigError(
            path,
            "attributes.trainer.entrypoint",
            f"module {'.'.join(module)!r} is not in {code_source_root(code)} (looked for "
            f"{base.relative_to(folder)}.py and {base.relative_to(folder)}/__init__.py)",
        )


def tenant_folder_of(path: Path) -> Path:
    """The tenant folder a component file lives in (the first folder below the defs root)."""
    path = path.resolve()
    root = defs_root().resolve()
    for parent in [path, *path.parents]:
        if parent.parent == root:
            return parent
    raise PlatformConfigError(
        path, "<location>", f"component files must live under {root}/<tenant>/"
    )


ROOT_COMPONENT = "platform_assets.composition.component.Tenants"


def check_root_component(path: Path) -> None:
    """The defs root's `defs.yaml` may only hand the tenant folders to the platform's catalog."""
    try:
        doc = read_document(path)
    except YamlError as exc:
        raise PlatformConfigError(path, exc.field, exc.reason) from exc
    if doc != {"type": ROOT_COMPONENT}:
        raise PlatformConfigError(
            path, "type", f"the defs root's defs.yaml must be exactly `type: {ROOT_COMPONENT}`"
        )


def tenant_folders(root: Path) -> list[Path]:
    """The tenant folders of a defs root; a file, a symlink or a folder whose name is no
    tenant name at the root is refused."""
    if not root.is_dir():
        raise PlatformConfigError(
            root,
            "<folder>",
            "the defs root (MLPLAT_DEFS_ROOT, or the package's defs/) is not a folder: on "
            "Kubernetes, the tenants' ConfigMaps are mounted there",
        )
    folders = []
    for p in sorted(root.iterdir()):
        if p.name == PYCACHE:
            continue
        if p.name == "defs.yaml" and not p.is_symlink():
            check_root_component(p)
            continue
        if p.is_symlink() or not p.is_dir():
            raise PlatformConfigError(
                p, "<file>", f"the defs root {root} holds only tenant folders (no files, no links)"
            )
        check_folder_name(p)
        folders.append(p)
    return folders


def load_all(root: Path | None = None) -> dict[str, TenantCatalog]:
    """Every tenant folder, parsed (each checks its own namespace: see `load_tenant`), and
    checked against the others (`check_across_tenants`)."""
    root = root or defs_root()
    catalogs = {p.name: load_tenant(p.resolve()) for p in tenant_folders(root)}
    check_across_tenants(catalogs)
    return catalogs


def check_across_tenants(catalogs: dict[str, TenantCatalog]) -> None:
    """What no tenant folder can check alone, so `mlplat validate` and `dg check defs` refuse
    it before it merges (a tenant's own location reads no other folder, so another tenant's
    removal never fails it):

    - a share names only existing tenants: one to a name no tenant has yet would be inherited
      by whichever tenant is created under that name;
    - a person or team (an owner, or an identity in `roles`) belongs to one tenant: a tenant
      may not give roles or ownership to another tenant's people.
    """
    people: dict[str, tuple[str, str]] = {}  # identity_key -> (tenant, field)
    for name in sorted(catalogs):
        tenant, path = catalogs[name].tenant, catalogs[name].file_of("tenant", name)
        for i, share in enumerate(tenant.shares):
            for j, reader in enumerate(share.tenants):
                if reader not in catalogs:
                    raise PlatformConfigError(
                        path,
                        f"attributes.shares[{i}].tenants[{j}]",
                        f"tenant {reader!r} does not exist (tenants: {', '.join(sorted(catalogs))})"
                        ": a share names only existing tenants, or a tenant created later under "
                        "that name would inherit it",
                    )
        for field_name, person in people_of(tenant):
            owner, where = people.setdefault(identity_key(person), (name, field_name))
            if owner != name:
                raise PlatformConfigError(
                    path,
                    field_name,
                    f"{person!r} is a person of tenant {owner!r} ({where} in "
                    f"{catalogs[owner].file_of('tenant', owner)}): a tenant names only its own "
                    "people",
                )


def people_of(tenant: TenantSpec) -> list[tuple[str, str]]:
    """(field, identity) of every person or team a tenant's YAML names: owners and roles."""
    found = [(f"attributes.owners[{i}]", o) for i, o in enumerate(tenant.owners)]
    for role in ROLES:
        found += [
            (f"attributes.roles.{role}[{i}]", who)
            for i, who in enumerate(getattr(tenant.roles, role))
        ]
    return found


def resolve_feature_set(
    catalog: TenantCatalog, ref: str, path: Path, field_name: str
) -> tuple[str, FeatureSetSpec]:
    """Find the feature set a model refers to: its own, or `<tenant>/<set>` shared with it."""
    if "/" not in ref:
        if ref not in catalog.feature_sets:
            known = ", ".join(sorted(catalog.feature_sets)) or "none"
            raise PlatformConfigError(
                path,
                field_name,
                f"feature set {ref!r} does not exist in tenant {catalog.tenant.name!r} "
                f"(known: {known})",
            )
        return catalog.tenant.name, catalog.feature_sets[ref]
    owner, name = ref.split("/", 1)
    # Only what the owner shares: its Tenant and that feature set, not its whole folder.
    folder = catalog.folder.parent / owner
    is_tenant = NAME_RE.fullmatch(owner) is not None and folder.is_dir()
    owner_tenant = shared_tenant(folder) if is_tenant else None
    fs = shared_feature_set(folder, name) if is_tenant else None
    if owner_tenant is None or fs is None:
        raise PlatformConfigError(path, field_name, f"feature set {ref!r} does not exist")
    shared = any(
        s.feature_set == name and catalog.tenant.name in s.tenants for s in owner_tenant.shares
    )
    if not shared:
        raise PlatformConfigError(
            path,
            field_name,
            f"tenant {catalog.tenant.name!r} may not read {owner!r}'s asset "
            f"'{owner}/features/{name}': {owner!r} does not share it with {catalog.tenant.name!r}",
        )
    return owner, fs


def _declared(folder: Path, parts: tuple[str, ...], spec_type: type, name: str):
    """The `spec_type` named `name` that `folder/<parts>/defs.yaml` declares, where the
    platform's layout puts it; None when that file is absent, linked or declares another."""
    path = folder
    for part in (*parts, "defs.yaml"):
        path = path / part
        if path.is_symlink():
            return None  # the owner's own location refuses the link; read its folder as it does
    if not path.is_file():
        return None
    spec = _parse(path)
    return spec if isinstance(spec, spec_type) and spec.name == name else None


def shared_tenant(folder: Path) -> TenantSpec:
    """Another tenant's Tenant (its `shares`), as its readers need it: read from its
    `tenant/defs.yaml` alone, so a broken file elsewhere in its folder fails only its own
    location; any other layout reads the whole folder (`load_tenant`)."""
    if not folder.is_symlink():
        spec = _declared(folder, ("tenant",), TenantSpec, folder.name)
        if spec is not None:
            return spec
    return load_tenant(folder.resolve()).tenant


def shared_feature_set(folder: Path, name: str) -> FeatureSetSpec | None:
    """Another tenant's feature set `name` from `features/<name>/defs.yaml` alone (else, as
    `shared_tenant`, from its whole folder); None when it has none of that name."""
    if not folder.is_symlink() and NAME_RE.fullmatch(name):  # a name, never a path
        spec = _declared(folder, ("features", name), FeatureSetSpec, name)
        if spec is not None:
            return spec
    return load_tenant(folder.resolve()).feature_sets.get(name)


def check_source_refs(catalog: TenantCatalog, fs: FeatureSetSpec) -> None:
    path = catalog.file_of("feature_set", fs.name)
    for i, source in enumerate(fs.sources):
        if source not in catalog.sources:
            known = ", ".join(sorted(catalog.sources)) or "none"
            raise PlatformConfigError(
                path,
                f"attributes.sources[{i}]",
                f"source {source!r} does not exist in tenant {catalog.tenant.name!r} "
                f"(known: {known})",
            )


def check_model_refs(
    catalog: TenantCatalog, model: ModelSpec
) -> dict[str, tuple[str, FeatureSetSpec]]:
    """Validate a model's feature and label references; returns ref -> (owner, feature set)."""
    path = catalog.file_of("model", model.name)
    resolved: dict[str, tuple[str, FeatureSetSpec]] = {}
    for i, ref in enumerate(model.features):
        set_ref, feature = ref.rsplit(":", 1)
        field_name = f"attributes.features[{i}]"
        owner, fs = resolve_feature_set(catalog, set_ref, path, field_name)
        if feature != "*" and feature not in fs.features:
            raise PlatformConfigError(
                path,
                field_name,
                f"feature {feature!r} is not in feature set {set_ref!r} "
                f"(it has: {', '.join(fs.features)})",
            )
        resolved[set_ref] = (owner, fs)
    labels = model.labels
    if labels.source not in catalog.sources:
        raise PlatformConfigError(
            path, "attributes.labels.source", f"source {labels.source!r} does not exist"
        )
    label_source = catalog.sources[labels.source]
    for fname, col in [
        ("timestamp_column", labels.timestamp_column),
        ("label_column", labels.label_column),
        *[(f"entity_columns[{i}]", c) for i, c in enumerate(labels.entity_columns)],
    ]:
        if col not in label_source.columns:
            raise PlatformConfigError(
                path,
                f"attributes.labels.{fname}",
                f"column {col!r} is not declared by source {labels.source!r}",
            )
    for set_ref, (_, fs) in resolved.items():
        if fs.entity.join_key not in labels.entity_columns:
            raise PlatformConfigError(
                path,
                "attributes.labels.entity_columns",
                f"feature set {set_ref!r} joins on {fs.entity.join_key!r}, "
                "which the labels do not provide",
            )
    return resolved
