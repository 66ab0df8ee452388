"""A team trainer that fails, in the model step of the demo's ridehail tenant: the step fails
with a message in the Dagster UI that names the model's file and the trainer, nothing is
registered in MLflow, and the failed step is billed to the tenant. (Each failure is tested
against the sandbox itself in tests/models/trainers/; here, through the real model step.)"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from platform_assets.models.trainers.job import TrainerFailed
from platform_assets.models.trainers.sandbox import check_sandbox
from platform_assets.tenancy.limits import LIMITS_ENV, LIMITS_PATH
from tests.conftest import skip_or_fail
from tests.platform_sandbox import sandbox

pytestmark = pytest.mark.materialize
MODEL_KEY = dg.AssetKey(["ridehail", "models", "driver_churn_lgbm"])
TS_KEY = dg.AssetKey(["ridehail", "training_sets", "driver_churn_lgbm"])
CHURN = Path("ridehail/code/src/ridehail_models/churn.py")
MODEL_FILE = Path("ridehail/models/driver_churn_lgbm/defs.yaml")


class Pipeline:
    """ridehail with its trainer, materialized once up to the training set; each test
    rewrites the team's code and runs the model step alone."""

    def __init__(self, root: Path, build, instance: dg.DagsterInstance):
        self.root, self.build, self.instance = root, build, instance

    def train(self, code: str) -> dg.ExecuteInProcessResult:
        (self.root / CHURN).write_text(textwrap.dedent(code))
        defs = self.build()
        return defs.resolve_job_def("ridehail_pipeline").execute_in_process(
            instance=self.instance, asset_selection=[MODEL_KEY], raise_on_error=False
        )

    def failure(self, result: dg.ExecuteInProcessResult) -> str:
        assert not result.success
        (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        return event.step_failure_data.user_failure_data.description

    def registered(self) -> list:
        mlflow = self.build().resources["mlflow"]
        return mlflow.client().search_model_versions("name = 'ridehail.driver_churn_lgbm'")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, trainer_envs) -> Iterator[Pipeline]:
    try:
        check_sandbox()
    except TrainerFailed as exc:
        skip_or_fail(str(exc))
    base = tmp_path_factory.mktemp("trainer-failures")
    limits = yaml.safe_load(LIMITS_PATH.read_text())
    limits["tenants"]["ridehail"]["trainer"] = {"timeout_s": 20}
    (base / "limits.yaml").write_text(yaml.safe_dump(limits))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPLAT_ENV", "local")
        mp.setenv("MLPLAT_DATA", str(base / "data"))
        mp.setenv("DAGSTER_HOME", str(base / "home"))
        mp.setenv("MLPLAT_TRAINER_ENVS", str(trainer_envs))
        mp.setenv(LIMITS_ENV, str(base / "limits.yaml"))
        (base / "home").mkdir()
        with (
            sandbox(mp, trainers=True) as (root, build),
            dg.instance_for_test(temp_dir=str(base / "home")) as instance,
        ):
            defs = build()
            upstream = dg.AssetSelection.assets(TS_KEY).upstream()
            result = defs.resolve_job_def("ridehail_pipeline").execute_in_process(
                instance=instance,
                asset_selection=list(upstream.resolve(defs.get_repository_def().asset_graph)),
            )
            assert result.success
            yield Pipeline(root, build, instance)


def prefix(pipeline: Pipeline) -> str:
    return f"{pipeline.root / MODEL_FILE}: trainer ridehail_models.churn:train"


def test_a_trainer_that_raises_fails_the_step_with_its_traceback(pipeline):
    result = pipeline.train(
        """
        def train(df, *, label, features, params):
            rates = {f: df[f].mean() for f in features}
            return rates["no_such_feature"]
        """
    )
    message = pipeline.failure(result)
    assert message.startswith(prefix(pipeline))
    assert "KeyError: 'no_such_feature'" in message
    assert 'rates["no_such_feature"]' in message  # the team's own line, from its traceback
    assert pipeline.registered() == []


def test_a_model_that_is_not_the_declared_flavor_fails_the_step(pipeline):
    result = pipeline.train(
        """
        def train(df, *, label, features, params):
            return {"weights": [0.1] * len(features)}
        """
    )
    message = pipeline.failure(result)
    assert message.startswith(prefix(pipeline))
    assert "lightgbm" in message and "dict" in message
    assert pipeline.registered() == []


def test_a_model_expecting_other_features_fails_the_step(pipeline):
    result = pipeline.train(
        """
        import lightgbm as lgb

        def train(df, *, label, features, params):
            X = df[features[:-1]]
            return lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, df[label]), 5)
        """
    )
    message = pipeline.failure(result)
    assert message.startswith(
        prefix(pipeline) + " (lightgbm): the returned model: the model expects features ["
    )
    assert "not the training set's [" in message
    assert pipeline.registered() == []


def test_a_trainer_past_its_time_limit_fails_the_step_and_is_billed(pipeline):
    result = pipeline.train(
        """
        import time

        def train(df, *, label, features, params):
            time.sleep(600)
        """
    )
    message = pipeline.failure(result)
    assert message.startswith(prefix(pipeline))
    assert "20" in message and "timeout_s" in message
    assert pipeline.registered() == []
    # Billed: the failed step's cost, recorded on the model asset by the step itself.
    [observation] = [
        record.asset_observation
        for record in pipeline.instance.fetch_observations(MODEL_KEY, limit=10).records
        if record.run_id == result.run_id
    ]
    md = observation.metadata
    assert md["cost/failed"].value.startswith("Failure: ")
    assert md["cost/tenant"].value == "ridehail"
    assert md["cost/wall_seconds"].value >= 20
    assert md["cost/usd"].value > 0
