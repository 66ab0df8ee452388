"""The code location builds tenants from the catalog; Dagster's component tree must agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing.utils import create_defs_folder_sandbox

from platform_assets.composition.locations import (
    all_locations,
)
from platform_assets.tenancy.catalog import PlatformConfigError, load_all
from tests.platform_sandbox import error_chain

DEMO_DEFS = Path(__file__).resolve().parents[2] / "platform_assets" / "defs"


def _describe(defs: dg.Definitions) -> dict:
    """Everything an asset carries, except what the component tree attaches."""
    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        spec = node.to_asset_spec()
        # What the component tree attaches: the component object, and an empty list of code
        # references on the platform's own assets (they come from no team file).
        metadata = {
            k: v
            for k, v in spec.metadata.items()
            if k != "dagster/component_origin"
            and not (k == "dagster/code_references" and not v.code_references)
        }
        out[key.to_user_string()] = {
            "group": node.group_name,
            "owners": sorted(node.owners),
            "tags": dict(node.tags),
            "kinds": sorted(node.kinds),
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "description": node.description,
            "metadata": repr(sorted(metadata.items())),
            "partitions": repr(node.partitions_def),
            "automation": repr(node.automation_condition),
            "op_tags": dict(node.assets_def.op.tags),
            "checks": sorted(
                (c.name, graph.get_check_spec(c).blocking, graph.get_check_spec(c).description)
                for c in node.check_keys
            ),
        }
    return out


def test_a_team_file_is_never_built_on_its_own(monkeypatch):
    # One build path: a tenant folder loaded without the defs root's `Tenants` component
    # (Dagster's loader walking it file by file) is refused, naming the file.
    with create_defs_folder_sandbox() as box:
        shutil.copytree(DEMO_DEFS / "ridehail", box.defs_folder_path / "ridehail")
        monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(box.defs_folder_path))
        with pytest.raises(Exception) as excinfo, box.build_component_tree() as tree:
            tree.build_defs()
    # Dagster loads a folder in name order: features/ first.
    first = box.defs_folder_path / "ridehail" / "features" / "driver_stats" / "defs.yaml"
    assert (
        f"{first}: team files are built by the defs root's `Tenants` component from the "
        "tenant catalog, not one by one"
    ) in error_chain(excinfo.value)


def test_dg_loads_the_repository_defs_through_the_catalog():
    """What `dg check defs` and `dg list defs` load: the defs root's `Tenants` component, which
    builds what the code locations build."""
    tree = dg.load_from_defs_folder(path_within_project=DEMO_DEFS.parent)
    assert _describe(tree) == _describe(all_locations())


def test_dg_never_imports_a_python_file_in_a_tenant_folder(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    with create_defs_folder_sandbox() as box:
        shutil.copy(DEMO_DEFS / "defs.yaml", box.defs_folder_path / "defs.yaml")
        shutil.copytree(DEMO_DEFS / "ridehail", box.defs_folder_path / "ridehail")
        evil = box.defs_folder_path / "ridehail" / "adhoc" / "assets.py"
        evil.parent.mkdir()
        evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
        monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(box.defs_folder_path))
        with pytest.raises(Exception) as excinfo, box.build_component_tree() as tree:
            tree.build_defs()
    assert f"{evil}: <file>: Python files are not allowed in a tenant folder" in error_chain(
        excinfo.value
    )
    assert not marker.exists()


def test_the_defs_root_component_cannot_be_swapped(tmp_path):
    root = tmp_path / "defs"
    shutil.copytree(DEMO_DEFS, root)
    (root / "defs.yaml").write_text("type: dagster.DefsFolderComponent\n")
    with pytest.raises(PlatformConfigError) as excinfo:
        load_all(root)
    assert str(excinfo.value) == (
        f"{root / 'defs.yaml'}: type: the defs root's defs.yaml must be exactly "
        "`type: platform_assets.composition.component.Tenants`"
    )


def test_assets_link_to_their_team_yaml():
    spec = next(
        s
        for s in all_locations().resolve_all_asset_specs()
        if s.key == dg.AssetKey(["ridehail", "features", "driver_stats"])
    )
    (reference,) = spec.metadata["dagster/code_references"].code_references
    assert reference.file_path == str(
        DEMO_DEFS / "ridehail" / "features" / "driver_stats" / "defs.yaml"
    )
