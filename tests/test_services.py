"""The services deployment as real processes: a tenant's pipeline run the way a pod runs it, and
the MLflow tracking server going down during training.

One stack per module (`up(dagster=False)`: S3 API server, MLflow tracking server with basic auth
on Postgres and artifacts proxied to S3; Postgres and Redis are the machine's), torn down by pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.services import stack as services
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service

pytestmark = [pytest.mark.services, pytest.mark.materialize]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Stack]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    db = int(REDIS_URL.rsplit("/", 1)[1])
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    folder = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPLAT_SERVICES_POSTGRES_URL", POSTGRES_URL)
        mp.setenv("MLPLAT_SERVICES_REDIS", f"127.0.0.1:6379,db={db}")
        started = services.up(folder=folder, dagster=False)
        try:
            yield started
        finally:
            services.down(folder)
            # Exactly what `up` started is stopped, with every child of it.
            pids = [c.pid for c in started.components.values() if c.pid is not None]
            assert pids and not [p for p in pids if services._group_alive(p)]


@pytest.fixture
def services_env(stack: services.Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = stack.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _pod_env(stack_env: dict[str, str], root: Path, trainer_envs: Path) -> dict[str, str]:
    """What a step pod gets: the services' endpoints and credentials, an empty home and temp
    dir, and a data root that must stay unused (nothing may fall back to this machine's disk).
    ridehail's trainer runs in a sandbox on this machine: its environments are cached in the
    session's folder, and built (from PyPI) with this machine's CA bundle."""
    (root / "home").mkdir()
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(services.dagster_yaml())
    # A short path of its own: the executor's fork server binds a Unix socket in it.
    tmp = tempfile.mkdtemp(prefix="pod-")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(root / "home"),
        "TMPDIR": tmp,
        **stack_env,
        "DAGSTER_HOME": str(home),
        "MLPLAT_DATA": str(root / "must-not-exist"),
        "MLPLAT_TRAINER_ENVS": str(trainer_envs),
        **{k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in os.environ},
    }


@pytest.mark.slow
def test_tenant_pipeline_runs_like_a_pod(
    stack, services_env, tmp_path, monkeypatch, record_property, trainer_envs
):
    import boto3
    import redis

    report = services.status(stack.folder)
    assert {n: i["healthy"] for n, i in report.items()} == dict.fromkeys(
        ["postgres", "redis", "s3", "mlflow"], True
    )
    assert report["mlflow"]["url"].startswith("http://127.0.0.1:")
    work = tmp_path / "work"
    work.mkdir()
    env = _pod_env(services_env, tmp_path, trainer_envs)
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "platform_assets.definitions"]
        + ["-j", "ridehail_pipeline"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    record_property("pod_run_seconds", round(time.perf_counter() - started, 1))
    shutil.rmtree(env["TMPDIR"], ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert list(work.iterdir()) == [], "the run wrote into its working directory"
    assert not (tmp_path / "must-not-exist").exists(), "something fell back to the data root"

    # The run is recorded in Postgres, every step in its own process.
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(dg.RunsFilter(job_name="ridehail_pipeline"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        starts = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        pids = {r.event_log_entry.dagster_event.pid for r in starts}
        assert len(pids) == len(starts) > 5
        assert instance.get_latest_materialization_event(
            dg.AssetKey(["ridehail", "evaluation_reports", "driver_churn"])
        )

    # The model is registered on the tracking server; its artifacts are in the S3 bucket.
    from platform_assets.resources.deployment import resources_for

    resources = resources_for("services")
    version = resources["mlflow"].client().get_model_version("ridehail.driver_churn", "1")
    assert version.tags["tenant"] == "ridehail"
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=services.BUCKET)["Contents"]]
    assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in keys)
    assert any(k.startswith("dagster/compute-logs/") for k in keys), "compute logs not in S3"

    # The Feast registry is on Postgres and the online store is Redis.
    feast = resources["feast"].process_config_and_initialize()
    store = feast.store("ridehail")
    assert {v.name for v in store.list_feature_views()} == {"driver_stats", "zone_demand"}
    store.materialize(start_date=datetime(2026, 1, 1), end_date=datetime(2026, 4, 3))
    online = store.get_online_features(
        features=["driver_stats:trips_7d"], entity_rows=[{"driver_id": "d0001"}]
    ).to_dict()
    assert online["trips_7d"][0] is not None
    db = int(env["MLPLAT_REDIS"].split("db=")[1])
    assert redis.Redis(host="127.0.0.1", port=6379, db=db).keys("*")


@pytest.mark.slow
def test_mlflow_server_down_during_training(
    stack, services_env, platform_home, monkeypatch, record_property
):
    """Runs after the pod test (same module), which left ridehail's training set in the lake and
    version 1 of its model in the registry."""
    import threading

    from platform_assets.definitions import defs
    from platform_assets.resources.deployment import resources_for

    monkeypatch.setenv("MLPLAT_ENV", "services")
    key = dg.AssetKey(["ridehail", "models", "driver_churn"])
    model = defs().resolve_assets_def(key)
    resources = resources_for("services")
    services.stop_component(stack, "mlflow")
    recovered: dict[str, float] = {}

    with dg.instance_for_test() as instance:

        def restart_after_first_failure() -> None:
            while not instance.fetch_observations(key, limit=1).records:
                time.sleep(0.5)
            recovered["seconds"] = services.restart_component(stack, "mlflow")

        watcher = threading.Thread(target=restart_after_first_failure, daemon=True)
        watcher.start()
        result = dg.materialize([model], instance=instance)  # the definitions' resources
        watcher.join(timeout=300)
        assert result.success
        retries = [
            e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
        ]
        assert retries, "the step was not retried"
        failures = instance.fetch_observations(key, limit=10).records
        first = failures[-1].asset_observation.metadata["cost/failed"].value
        assert stack.components["mlflow"].url in first  # MLflow's error names the server
        run_id = result.run_id

    versions = resources["mlflow"].client().search_model_versions("name = 'ridehail.driver_churn'")
    # Exactly one new version, from this run, tagged: none orphaned by the failed attempts.
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.tags.get("dagster_run_id") for v in versions if v.version == "2"} == {run_id}
    record_property("mlflow_restart_seconds", round(recovered["seconds"], 1))
    record_property("failed_attempts_billed", len(failures))
