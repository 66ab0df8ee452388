"""What a feature snapshot was computed from: the version of each source snapshot its SQL read,
kept beside it in the lake (`<version>.json`). Training-set manifests copy it, so retraining can
tell whether a source has content a model has not seen (docs/monitoring.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from platform_assets.resources.lake import LakeResource, Snapshot

INPUTS_EXPORT = "json"


def record_inputs(lake: LakeResource, snapshot: Snapshot, sources: dict[str, str]) -> str:
    """Store the source versions (name -> version) `snapshot` was computed from; its URI.

    A snapshot's version is its content's hash, so other source versions that give the same
    table share it: the last of them is recorded, which holds no data the table lacks."""
    data = json.dumps({"sources": sources}, indent=2, sort_keys=True).encode()
    return lake.attach(snapshot, INPUTS_EXPORT, data)


def recorded_inputs(
    lake: LakeResource, tenant: str, name: str, version: str
) -> dict[str, str] | None:
    """The source versions feature snapshot `<tenant>/features/<name>@<version>` was computed
    from; None for a snapshot written before they were recorded."""
    fs, base = lake.filesystem()
    path = f"{base}/{tenant}/features/{name}/{version}.{INPUTS_EXPORT}"
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())["sources"]
    except FileNotFoundError:
        return None
