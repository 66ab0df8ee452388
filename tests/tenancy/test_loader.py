"""The code location builds tenants from the catalog; Dagster's component tree must agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import yaml

from platform_assets.definitions import (
    component_tree_definitions,
    platform_definitions,
    tenant_definitions,
)
from platform_assets.tenancy.catalog import defs_root, load_all
from platform_assets.tenancy.loader import catalog_definitions, dagster_only_files

DEMO_DEFS = Path(__file__).resolve().parents[2] / "platform_assets" / "defs"


def _describe(defs: dg.Definitions) -> dict:
    """Everything a tenant asset carries, except the component object the tree attaches."""
    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        spec = node.to_asset_spec()
        metadata = {k: v for k, v in spec.metadata.items() if k != "dagster/component_origin"}
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


def test_catalog_loader_builds_what_the_component_tree_builds():
    from_catalog = _describe(platform_definitions(catalog_definitions(load_all())))
    from_tree = _describe(platform_definitions(component_tree_definitions(defs_root().resolve())))
    assert from_catalog.keys() == from_tree.keys()
    for key in from_tree:
        assert from_catalog[key] == from_tree[key], key


def test_assets_link_to_their_team_yaml():
    spec = next(
        s
        for s in platform_definitions(catalog_definitions(load_all())).resolve_all_asset_specs()
        if s.key == dg.AssetKey(["ridehail", "features", "driver_stats"])
    )
    (reference,) = spec.metadata["dagster/code_references"].code_references
    assert reference.file_path == str(
        DEMO_DEFS / "ridehail" / "features" / "driver_stats" / "defs.yaml"
    )


def test_a_python_module_in_a_tenant_folder_loads_through_the_component_tree(tmp_path, monkeypatch):
    root = tmp_path / "mlplat_loader_fallback_defs"
    shutil.copytree(DEMO_DEFS / "ridehail", root / "ridehail")
    extra = root / "ridehail" / "adhoc"
    extra.mkdir()
    (extra / "assets.py").write_text(
        "import dagster as dg\n\n\n"
        "@dg.asset(key=['ridehail', 'adhoc', 'report'], group_name='ridehail')\n"
        "def report() -> None:\n    return None\n"
    )
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    assert dagster_only_files(root, load_all(root)) == [extra / "assets.py"]
    keys = {s.key for s in platform_definitions(tenant_definitions()).resolve_all_asset_specs()}
    assert dg.AssetKey(["ridehail", "adhoc", "report"]) in keys
    assert dg.AssetKey(["ridehail", "models", "driver_churn"]) in keys


def test_post_processed_yaml_is_left_to_the_component_tree(tmp_path, monkeypatch):
    root = tmp_path / "mlplat_loader_post_processing_defs"
    shutil.copytree(DEMO_DEFS / "ridehail", root / "ridehail")
    path = root / "ridehail" / "sources" / "trips" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["post_processing"] = {
        "assets": [{"target": "*", "attributes": {"tags": {"cost_center": "cc-42"}}}]
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    assert dagster_only_files(root, load_all(root)) == [path]
    spec = next(
        s
        for s in platform_definitions(tenant_definitions()).resolve_all_asset_specs()
        if s.key == dg.AssetKey(["ridehail", "sources", "trips"])
    )
    assert spec.tags["cost_center"] == "cc-42"
