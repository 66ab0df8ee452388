"""A team's trainer in the bubblewrap sandbox: it trains, its Pipes messages are marked as the
team's, and each way it can fail says why."""

from __future__ import annotations

import lightgbm as lgb
import pytest

from tests.models.trainers.conftest import Trained

pytestmark = pytest.mark.materialize

LIGHTGBM = """
    import lightgbm as lgb
    from dagster_pipes import PipesContext

    def train(df, *, label, features, params):
        pipes = PipesContext.get()
        pipes.log.info(f"training on {len(df)} rows, columns {sorted(df.columns)}")
        pipes.report_asset_materialization(metadata={"rows": len(df)})
        pipes.report_custom_message({"note": "hello from the team"})
        pipes.report_asset_check(check_name="fake", passed=True)
        data = lgb.Dataset(df[features], df[label])
        return lgb.train({"objective": "binary", "verbose": -1, **params}, data, num_boost_round=5)
"""


def test_trains_and_marks_its_messages(trainer) -> None:
    run: Trained = trainer(LIGHTGBM)
    assert run.error is None, run.error
    assert run.output is not None
    booster = lgb.Booster(model_file=str(run.output.artifact))
    assert booster.num_trees() == 5
    assert booster.feature_name() == ["trips", "rating"]
    assert run.output.reported == {
        "metadata": {"rows": 200},
        "custom_messages": [{"note": "hello from the team"}],
    }
    assert "[ridehail trainer] training on 200 rows, columns ['churned', 'rating', 'trips']" in (
        run.logs
    )
    assert "[ridehail trainer] dropped an asset check (a team's code reports no check results)" in (
        run.logs
    )
    assert run.recorded == [{}], "the team's reports are no materialization or check result"
    assert run.output.wall_s > 0 and run.output.cpu_s > 0 and run.output.max_rss_bytes > 0


def test_sklearn_model_saved_with_skops(trainer) -> None:
    run = trainer(
        """
        from sklearn.linear_model import LogisticRegression

        def train(df, *, label, features, params):
            return LogisticRegression(**params).fit(df[features], df[label])
        """,
        flavor="sklearn",
        params={"C": 0.5},
    )
    assert run.error is None, run.error
    import skops.io

    model = skops.io.load(
        run.output.artifact, trusted=skops.io.get_untrusted_types(file=run.output.artifact)
    )
    assert model.C == 0.5


def test_missing_module(trainer) -> None:
    run = trainer(LIGHTGBM, entrypoint="ridehail_models.nowhere:train")
    assert "trainer ridehail_models.nowhere:train failed: entrypoint " in str(run.error)
    assert "no module 'ridehail_models.nowhere' in the team's code/" in str(run.error)


def test_missing_function(trainer) -> None:
    run = trainer(LIGHTGBM, entrypoint="ridehail_models.retention:fit")
    assert "module 'ridehail_models.retention' has no function 'fit'" in str(run.error)


def test_trainer_raises(trainer) -> None:
    run = trainer(
        """
        def train(df, *, label, features, params):
            raise ValueError("label column is all zeros")
        """
    )
    message = str(run.error)
    assert "retention.yaml: trainer ridehail_models.retention:train failed" in message
    assert "Traceback (most recent call last)" in message
    assert 'retention.py", line 3, in train' in message
    assert "ValueError: label column is all zeros" in message
    (output,) = [line for line in run.logs if line.startswith("[ridehail trainer] output")]
    assert "ValueError: label column is all zeros" in output


def test_time_limit(trainer) -> None:
    run = trainer(
        """
        import time

        def train(df, *, label, features, params):
            time.sleep(60)
        """,
        timeout_s=3.0,
    )
    assert "exceeded its time limit of 3 s (timeout_s in limits.yaml) and was killed" in str(
        run.error
    )


def test_memory_limit(trainer) -> None:
    run = trainer(
        """
        def train(df, *, label, features, params):
            hog = bytearray(3 * 2**30)
        """,
        memory_gib=2.0,
    )
    assert "failed: it ran out of memory: the limit is 2 GiB of address space" in str(run.error)
    assert "MemoryError" in str(run.error)


def test_wrong_type_for_flavor(trainer) -> None:
    run = trainer(
        """
        from sklearn.linear_model import LogisticRegression

        def train(df, *, label, features, params):
            return LogisticRegression().fit(df[features], df[label])
        """,
        flavor="xgboost",
    )
    assert (
        "flavor xgboost: the trainer returned sklearn.linear_model._logistic.LogisticRegression; "
        "expected an xgboost.Booster or xgboost.XGBModel"
    ) in str(run.error)


def test_artifact_over_size_cap(trainer) -> None:
    run = trainer(
        """
        import lightgbm as lgb

        def train(df, *, label, features, params):
            data = lgb.Dataset(df[features], df[label])
            return lgb.train({"objective": "binary", "verbose": -1}, data, num_boost_round=200)
        """,
        artifact_bytes=16 * 1024,
    )
    assert "the model file is over the size cap of 0.015625 MiB (artifact_mib in limits.yaml)" in (
        str(run.error)
    )


def test_tmp_is_capped(trainer) -> None:
    run = trainer(
        """
        def train(df, *, label, features, params):
            with open("/tmp/fill", "wb") as f:
                f.write(b"x" * (32 * 2**20))
        """,
        tmp_bytes=8 * 2**20,
    )
    assert "No space left on device" in str(run.error)


def test_message_flood_is_bounded(trainer) -> None:
    run = trainer(
        """
        from dagster_pipes import PipesContext

        def train(df, *, label, features, params):
            pipes = PipesContext.get()
            for i in range(1500):
                pipes.log.info(f"line {i}")
            for i in range(300):
                pipes.report_custom_message({"i": i, "pad": "x" * 100})
            for _ in range(50):
                pipes._message_channel.write_message({"method": "closed", "params": {}})
                pipes._message_channel.write_message({"method": "bogus", "params": {}})
            return b"model"
        """,
        flavor="onnx",
    )
    assert run.error is None, run.error
    marked = [line for line in run.logs if line.startswith("[ridehail trainer] line ")]
    assert len(marked) == 1000
    assert run.logs.count("[ridehail trainer] dropped log messages past the first 1000") == 1
    assert len(run.output.reported["custom_messages"]) == 100
    assert run.logs.count("[ridehail trainer] dropped a repeated 'closed' message") == 1
    assert run.logs.count("[ridehail trainer] dropped a message of no Pipes method") == 1
    assert not [line for line in run.logs if "unexpected message received after closed" in line]


def test_cpu_time_limit(trainer) -> None:
    # 0.05 CPU for 40 s: 3 s of CPU time (rounded up, plus one), reached well before the wall.
    run = trainer(
        """
        def train(df, *, label, features, params):
            while True:
                pass
        """,
        cpu=0.05,
        timeout_s=40.0,
    )
    assert "failed: it used more CPU time than its limit (0.05 CPU x 40 s)" in str(run.error)
