"""Training-set manifests and `mlplat training-set reproduce`, on a real materialized tenant."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from platform_assets.cli.main import app
from platform_assets.data.generator import generate
from platform_assets.models.manifest import ReproduceError, load, reproduce
from platform_assets.resources.lake import LakeResource
from tests.platform_sandbox import sandbox

pytestmark = [pytest.mark.materialize, pytest.mark.slow]
TRAINING_SET = dg.AssetKey(["ridehail", "training_sets", "driver_churn"])


def _run(defs: dg.Definitions, instance) -> None:
    result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(instance=instance)
    assert result.success


def _reproduce_cli(version: int):
    return CliRunner().invoke(
        app, ["training-set", "reproduce", "ridehail/driver_churn", "--version", str(version)]
    )


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory):
    """ridehail built twice: model version 1 on the generated trips, version 2 after the trips
    source was re-materialized with a third of its rows gone."""
    home = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLPLAT_DATA", str(home / "data"))
        monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
        monkeypatch.setenv("MLPLAT_ENV", "local")
        (home / "dagster").mkdir()
        with (
            sandbox(monkeypatch) as (root, build),
            dg.instance_for_test(temp_dir=str(home / "dagster")) as instance,
        ):
            path = root / "ridehail" / "sources" / "trips" / "defs.yaml"
            doc = yaml.safe_load(path.read_text())
            del doc["attributes"]["generator"]
            doc["attributes"]["path"] = "trips.parquet"  # relative to the tenant's inbox
            path.write_text(yaml.safe_dump(doc))
            defs = build()
            trips = Path(defs.resources["lake"].root) / "ridehail" / "inbox" / "trips.parquet"
            trips.parent.mkdir(parents=True, exist_ok=True)
            generate("ridehail.trips").to_parquet(trips)
            _run(defs, instance)
            first = instance.get_latest_materialization_event(TRAINING_SET).asset_materialization
            pd.read_parquet(trips).iloc[::3].to_parquet(trips)
            _run(defs, instance)
            yield defs, first, monkeypatch


def test_training_set_records_its_manifest_in_the_ui_and_the_lake(two_versions) -> None:
    defs, first, _ = two_versions
    lake = defs.resources["lake"]
    shown = first.metadata["manifest"].value
    manifest = load(lake, "ridehail", "driver_churn", first.metadata["data_version"].value)
    assert shown["training_set"] == manifest["training_set"]
    assert shown["feature_service"] == {
        "name": "driver_churn_v1",
        "definition_hash": manifest["feature_service"]["definition_hash"],
    }
    assert {v["name"] for v in shown["feature_views"]} == {"driver_stats", "zone_demand"}
    for view in shown["feature_views"]:
        assert re.fullmatch(r"[0-9a-f]{16}", view["definition_hash"])
        assert re.fullmatch(r"[0-9a-f]{16}", view["table"]["version"])
    assert [s["name"] for s in shown["sources"]] == ["driver_churn_labels"]
    assert shown["entity_frame"]["rows"] > 0 and re.fullmatch(
        r"[0-9a-f]{16}", shown["entity_frame"]["hash"]
    )
    assert set(shown["versions"]) == {
        "offline_store",
        "mlplat",
        "feast",
        "duckdb",
        "pyarrow",
        "pandas",
    }
    assert "proto" not in shown["feature_service"]  # definitions stay in the lake's copy


def test_reproduce_rebuilds_the_first_training_set_after_the_sources_changed(
    two_versions,
) -> None:
    defs, first, _ = two_versions
    lake = defs.resources["lake"]
    now = lake.current("ridehail", "training_sets", "driver_churn").version
    assert now != first.metadata["data_version"].value  # the sources really changed
    result = _reproduce_cli(1)
    assert result.exit_code == 0, result.output
    recorded = first.metadata["manifest"].value["training_set"]["content_hash"]
    assert f"content hash {recorded} = the manifest's" in result.output
    assert _reproduce_cli(2).exit_code == 0


def test_reproduce_after_the_retention_period_says_so(two_versions, tmp_path: Path) -> None:
    defs, first, _ = two_versions
    lake = defs.resources["lake"]
    manifest = load(lake, "ridehail", "driver_churn", first.metadata["data_version"].value)
    # A copy of the lake whose retention is over for everything not current.
    expired = LakeResource(root=str(tmp_path / "lake"), retention_days=0)
    shutil.copytree(lake.root, expired.root)
    expired.prune()
    with pytest.raises(
        ReproduceError,
        match=r"training set ridehail/training_sets/driver_churn@[0-9a-f]{16} was built on "
        r"\d{4}-\d\d-\d\d, more than the retention period \(0 days\) ago; its snapshot "
        r"ridehail/features/\w+@[0-9a-f]{16} has been pruned",
    ):
        reproduce(expired, manifest)


def test_reproduce_with_a_snapshot_deleted_early_names_it(two_versions) -> None:
    defs, first, _ = two_versions
    lake = defs.resources["lake"]
    manifest = load(lake, "ridehail", "driver_churn", first.metadata["data_version"].value)
    table = next(v["table"] for v in manifest["feature_views"] if v["name"] == "driver_stats")
    snapshot = lake.snapshot("ridehail", "features", "driver_stats", table["version"])
    Path(snapshot.uri).unlink()
    result = _reproduce_cli(1)
    assert result.exit_code == 1
    assert (
        f"snapshot ridehail/features/driver_stats@{table['version']} was deleted before the "
        "retention period (90 days) ended" in result.output
    )
