"""The promotion sensor under bursts: 1,000 evaluations across 100 models, each model submitted
exactly once with its best passing version; one model's burst never makes the cursor skip
another model's records. (Tick times are printed by `make bench`, not asserted here.)"""

from __future__ import annotations

import dagster as dg
import pytest

from bench.promotion_bench import generate_defs, model_names, run, write_burst

pytestmark = pytest.mark.slow


def test_a_burst_of_1000_evaluations_across_100_models(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLAT_ENV", "local")
    # The bench points these at its generated tenants; restored after the test.
    monkeypatch.delenv("MLPLAT_DEFS_ROOT", raising=False)
    monkeypatch.delenv("MLPLAT_DATA", raising=False)
    result = run(100, 10, tmp_path)
    assert result["evaluations"] == 1000
    assert result["requests"] == 100
    assert result["each_model_once"] and result["best_passing_version_submitted"]


def test_one_models_burst_does_not_skip_another_models_records(tmp_path, monkeypatch):
    from platform_assets.governance.promotion import promote_model
    from platform_assets.governance.sensors import PER_KEY_LIMIT, promotion_sensor, read_cursor
    from platform_assets.resources.mlflow import MlflowResource

    monkeypatch.setenv("MLPLAT_ENV", "local")
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(generate_defs(tmp_path, 2)))
    monkeypatch.setenv("MLPLAT_DATA", str(tmp_path / "data"))
    busy, quiet = model_names(2)
    keys = [dg.AssetKey(["payments", "evaluation_reports", m]) for m in (busy, quiet)]
    defs = dg.Definitions(
        assets=[dg.AssetSpec(k, tags={"asset_type": "evaluation_report"}) for k in keys],
        jobs=[promote_model],
        sensors=[promotion_sensor],
        resources={
            "mlflow": MlflowResource(
                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                artifact_root=str(tmp_path / "artifacts"),
            )
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        write_burst(instance, [busy], PER_KEY_LIMIT + 30, seed=1, leak_rate=0)
        expected_quiet = write_burst(instance, [quiet], 1, seed=2, leak_rate=0)
        # More of the busy model after the quiet one.
        write_burst(instance, [busy], 20, seed=3, first_version=PER_KEY_LIMIT + 31)
        cursor, per_tick = None, []
        for _ in range(5):
            with dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                repository_def=defs.get_repository_def(),
                resources=defs.resources,
            ) as context:
                result = promotion_sensor(context)
                cursor = context.cursor
            per_tick.append(result.run_requests or [])
        newest = {
            k.to_user_string(): instance.fetch_materializations(k, limit=1).records[0].storage_id
            for k in keys
        }
    first = {r.tags["mlplat/model"]: int(r.tags["mlplat/version"]) for r in per_tick[0]}
    assert first[f"payments.{quiet}"] == expected_quiet[f"payments.{quiet}"]
    assert read_cursor(cursor) == newest  # every record of both models was read
    assert sum(len(t) for t in per_tick[2:]) == 0  # and nothing is read twice
