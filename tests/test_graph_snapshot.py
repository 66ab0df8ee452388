"""The whole resolved asset graph as reviewed JSON: every pull request shows its graph change.

Update with `make snapshot` (syrupy's `--snapshot-update`) and review the diff of
tests/__snapshots__/test_graph_snapshot/test_asset_graph_matches_snapshot.json.
"""

from __future__ import annotations

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from platform_assets.definitions import defs


def graph_snapshot() -> dict:
    repo = defs().get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "owners": sorted(node.owners),
            "tags": dict(sorted(node.tags.items())),
            "kinds": sorted(node.kinds),
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            # Its label names the YAML's schedule, so a pull request that changes one shows it.
            "automation": node.automation_condition.get_label()
            if node.automation_condition is not None
            else None,
            "checks": sorted(
                f"{c.name}{' (blocking)' if graph.get_check_spec(c).blocking else ''}"
                for c in node.check_keys
            ),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


def test_asset_graph_matches_snapshot(snapshot_json):
    assert graph_snapshot() == snapshot_json
