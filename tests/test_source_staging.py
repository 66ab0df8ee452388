"""A source snapshot is staged, checked, then committed: bad data never replaces the last good one
(issue #10 item 7). Each bad-input path has its own test asserting the message."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from platform_assets.data.generator import generate
from tests.platform_sandbox import sandbox
from tests.test_pipeline import TRIPS

pytestmark = pytest.mark.materialize


def _run_trips(defs: dg.Definitions, instance) -> dg.ExecuteInProcessResult:
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[TRIPS], raise_on_error=False
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = event.step_failure_data
    parts = [data.error.message] if data.error else []
    if data.error and data.error.cause:
        parts.append(data.error.cause.message)
    if data.user_failure_data and data.user_failure_data.description:
        parts.append(data.user_failure_data.description)
    return "\n".join(parts)


def _files(lake) -> list[str]:
    fs, base = lake.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/ridehail/sources/trips"))
    return sorted(i.base_name for i in infos)


@pytest.fixture
def csv_trips(monkeypatch, platform_home, instance, tmp_path):
    """ridehail with its trips read from a CSV file, materialized once: (defs folder, CSV,
    build, the committed snapshot)."""
    trips = tmp_path / "trips.csv"
    generate("ridehail.trips").to_csv(trips, index=False)
    with sandbox(monkeypatch) as (root, build):
        path = root / "ridehail" / "sources" / "trips" / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        del doc["attributes"]["generator"]
        doc["attributes"]["path"] = str(trips)
        path.write_text(yaml.safe_dump(doc))
        defs = build()
        result = _run_trips(defs, instance)
        assert result.success
        lake = defs.resources["lake"]
        good = lake.current("ridehail", "sources", "trips")
        [event] = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["data_version"].value == good.version
        assert metadata["uri"].value == good.uri
        assert event.materialization.tags["dagster/data_version"] == good.version
        yield root, trips, build, good


def test_a_failed_blocking_check_leaves_the_last_good_snapshot(csv_trips, instance):
    _, trips, build, good = csv_trips
    before = Path(good.uri).read_bytes()
    df = pd.read_csv(trips)
    df.loc[7, "fare"] = 5000.0  # breaks the YAML's `fare` between 0 and 1000
    df.to_csv(trips, index=False)
    defs = build()
    result = _run_trips(defs, instance)

    assert not result.success
    message = _failure(result)
    assert "source ridehail/trips: blocking check(s) expectations failed" in message
    assert f"the lake keeps its previous snapshot {good.version}" in message
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["schema"].passed and not checks["expectations"].passed
    assert not result.get_asset_materialization_events()  # nothing was made current

    lake = defs.resources["lake"]
    assert lake.current("ridehail", "sources", "trips") == good
    assert Path(good.uri).read_bytes() == before
    # The rejected data stays staged beside it, for a person to look at, until pruned.
    [staged] = [f for f in _files(lake) if f not in ("current.json", f"{good.version}.parquet")]
    assert f"snapshot {staged.removesuffix('.parquet')} stays staged" in message


def test_an_unparseable_timestamp_leaves_the_last_good_snapshot(csv_trips, instance):
    _, trips, build, good = csv_trips
    before = Path(good.uri).read_bytes()
    files = _files(build().resources["lake"])
    df = pd.read_csv(trips, dtype={"event_ts": "string"})
    df.loc[40, "event_ts"] = "2026-02-30 25:61:00"
    df.to_csv(trips, index=False)

    defs = build()
    result = _run_trips(defs, instance)

    assert not result.success
    assert (
        f"source 'trips': cannot read {trips}: column 'event_ts', line 42: "
        "'2026-02-30 25:61:00' is not a timestamp" in _failure(result)
    )
    lake = defs.resources["lake"]
    assert lake.current("ridehail", "sources", "trips") == good
    assert Path(good.uri).read_bytes() == before
    assert _files(lake) == files  # nothing was written at all
