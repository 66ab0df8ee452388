"""The code locations build tenants from the catalog; Dagster's component tree must agree."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.location_defs import (
    all_locations,
    platform_parts,
    platform_wide,
    tenant_runs,
)
from platform_assets.tenancy.locations import tenant_folders

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


def _component_tree() -> dg.Definitions:
    """The demo defs folder file by file through Dagster's component tree, as `dg` would."""
    tenants = dg.load_from_defs_folder(path_within_project=DEMO_DEFS.parent)
    runs = tenant_runs(load_all())
    return platform_wide(dg.Definitions.merge(tenants, runs, platform_parts(tenant_folders())))


def test_catalog_loader_builds_what_the_component_tree_builds():
    from_catalog = _describe(all_locations())
    from_tree = _describe(_component_tree())
    assert from_catalog.keys() == from_tree.keys()
    for key in from_tree:
        assert from_catalog[key] == from_tree[key], key


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
    assert load_all()  # the demo folder parses as the catalog
