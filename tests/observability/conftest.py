"""A real tenant for the observability tests: ridehail with a freshness SLO on its sources and
a trips file that fails its expectations, and a way to run its assets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from platform_assets.data.generator import generate
from tests.platform_sandbox import launch_from, sandbox

LABELS = dg.AssetKey(["ridehail", "sources", "driver_churn_labels"])
TRIPS = dg.AssetKey(["ridehail", "sources", "trips"])


@pytest.fixture
def ridehail(monkeypatch, platform_home, instance) -> Iterator[tuple[Path, dg.Definitions]]:
    """ridehail whose sources have a freshness SLO and whose trips come from a CSV file that
    breaks its expectations (so materializing trips fails its blocking check)."""
    with sandbox(monkeypatch) as (root, build):
        tenant = root / "ridehail" / "tenant" / "defs.yaml"
        doc = yaml.safe_load(tenant.read_text())
        doc["attributes"]["slos"]["freshness"]["source"] = {
            "fail_after_hours": 2,
            "warn_after_hours": 1,
        }
        tenant.write_text(yaml.safe_dump(doc))
        trips = root / "ridehail" / "sources" / "trips" / "defs.yaml"
        doc = yaml.safe_load(trips.read_text())
        del doc["attributes"]["generator"]
        doc["attributes"]["path"] = "trips.csv"
        trips.write_text(yaml.safe_dump(doc))
        defs = build()
        inbox = Path(defs.resources["lake"].root) / "ridehail" / "inbox"
        inbox.mkdir(parents=True)
        df = generate("ridehail.trips")
        df.loc[3, "fare"] = 5000.0  # outside the YAML's 0..1000
        df.to_csv(inbox / "trips.csv", index=False)
        yield root, defs


def materialize(defs: dg.Definitions, instance, key: dg.AssetKey) -> bool:
    """Materialize `key` in a run launched from its tenant's code location, as the UI would."""
    run = launch_from(key.path[0], [defs.get_assets_def(key)], instance, defs.resources)
    return run.status == dg.DagsterRunStatus.SUCCESS
