"""The whole resolved asset graph as reviewed JSON: every pull request shows its graph change.

Update with `make snapshot` and review the diff of tests/snapshots/asset_graph.json.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from platform_assets.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


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
            "automation": node.automation_condition is not None,
            "checks": sorted(
                f"{c.name}{' (blocking)' if graph.get_check_spec(c).blocking else ''}"
                for c in node.check_keys
            ),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


def test_asset_graph_matches_snapshot():
    current = json.dumps(graph_snapshot(), indent=2, sort_keys=False) + "\n"
    if os.environ.get("MLPLAT_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(True), current.splitlines(True), "snapshot", "current", n=2
        )
    )
    assert not diff, f"asset graph changed; review and run `make snapshot`:\n{diff}"
