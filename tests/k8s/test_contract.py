"""CONTRACT TEST (marker `slow`): a tenant's pipeline through dagster-k8s's real
`k8s_job_executor` and its run-launcher config, where the Kubernetes batch API is a stand-in
(tests/k8s/contract_job.py) that runs each submitted Job's container command and environment as
a local process and reports the Job's status from its exit code.

It proves the Jobs carry what a step needs: every setting a step uses reaches it only through
its manifest (env, envFrom of the tenant's ConfigMap and Secrets, args), with the platform's
services (Postgres, Redis) behind the Secret as a cluster would hold them. It does not prove
scheduling, Pod Security Admission or NetworkPolicy: `make k8s-e2e` does, on a real cluster.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import requests
from dagster._core.definitions.reconstruct import ReconstructableJob

from platform_assets.k8s.config import SERVICE_KEYS, platform
from platform_assets.k8s.jobs import KUBECONFIG, launcher_instance_config
from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.render import helm_template, pod_parameters, tenant_chart_values
from platform_assets.k8s.schemas import check_manifest
from platform_assets.resources.feature_store import FeastResource
from platform_assets.tenancy.catalog import load_all

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.materialize]
JOB_FILE = Path(__file__).with_name("contract_job.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def databases(postgres_url):
    names = {
        role: f"mlplat_contract_{role}_{uuid.uuid4().hex[:8]}"
        for role in ("dagster", "mlflow", "feast")
    }
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    for name in names.values():
        admin.cursor().execute(f"create database {name}")
    try:
        base = postgres_url.rsplit("/", 1)[0]
        yield {role: f"{base}/{name}" for role, name in names.items()}
    finally:
        for name in names.values():
            admin.cursor().execute(f"drop database {name} with (force)")
        admin.close()


@pytest.fixture
def mlflow_server(databases, tmp_path):
    """An MLflow tracking server on a free loopback port, its store the test's Postgres database
    and its artifacts proxied to a temp folder: MLPLAT_ENV=k8s steps talk to a server only."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "mlflow_server.log"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin), "server",
            "--backend-store-uri", databases["mlflow"],
            "--artifacts-destination", str(tmp_path / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),  # noqa: SIM115 (the server writes it until the test ends)
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not come up in 300 s")
            try:
                if requests.get(f"{uri}/health", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet
                time.sleep(1)
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)


def test_contract_tenant_pipeline_runs_through_the_real_k8s_job_executor(
    helm, databases, mlflow_server, redis_url, tmp_path, monkeypatch
):
    import redis

    tenants = {n: c.tenant for n, c in load_all().items()}
    spec = tenants["ridehail"]
    db = int(redis_url.rsplit("/", 1)[1])
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    services = {
        "MLPLAT_LAKE_URI": str(tmp_path / "lake"),
        "MLPLAT_FEAST_REGISTRY_URL": databases["feast"],
        "MLPLAT_REDIS": f"127.0.0.1:6379,db={db}",
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLPLAT_MLFLOW_ARTIFACTS": str(tmp_path / "artifacts"),
        "MLPLAT_DB_URL": f"sqlite:///{tmp_path / 'platform.db'}",
    }
    assert set(services) == set(SERVICE_KEYS)
    # The tenant namespace as the cluster would hold it: our chart's ConfigMaps as helm renders
    # them, and the Secrets the platform creates under the names the chart declares.
    rendered = {
        (m["kind"], m["metadata"]["name"]): m
        for m in helm_template(tenant_chart_values("ridehail", spec))
    }
    declared = rendered[("ConfigMap", "ridehail-secret-references")]["data"]
    secrets = {
        platform().postgres.password_secret: {"postgresql-password": "unused: storage in args"},
        "ridehail-services": services,
    }
    assert {name: ",".join(data) for name, data in secrets.items()} == declared
    work = tmp_path / "cluster"
    work.mkdir()
    cluster = work / "state.json"
    configmaps = {"dagster-pipeline-env": rendered[("ConfigMap", "dagster-pipeline-env")]["data"]}
    cluster.write_text(
        json.dumps(
            {
                "namespaces": {spec.namespace: {"configmaps": configmaps, "secrets": secrets}},
                "workdir": str(work),
                "app_dir": str(ROOT),
            }
        )
    )

    # The Feast registry's tables exist before the first run, as after the platform's deploy:
    # parallel steps creating them on a fresh Postgres race (duplicate pg_type rows).
    assert (
        FeastResource(
            root=str(tmp_path / "feast"),
            registry_url=services["MLPLAT_FEAST_REGISTRY_URL"],
            redis=services["MLPLAT_REDIS"],
        )
        .store("ridehail")
        .registry
        is not None
    )

    # The orchestrating process (the run worker's role) builds the same job.
    monkeypatch.setenv("MLPLAT_ENV", "k8s")
    monkeypatch.setenv("MLPLAT_CONTRACT_CLUSTER", str(cluster))
    for key, value in services.items():
        monkeypatch.setenv(key, value)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    launcher = launcher_instance_config(kubeconfig)
    launcher["config"]["env_config_maps"] = ["dagster-pipeline-env"]
    storage = {
        "postgres": {
            "postgres_url": databases["dagster"].replace("postgresql://", "postgresql+psycopg2://")
        }
    }
    job = ReconstructableJob.for_file(str(JOB_FILE), "ridehail_pipeline")
    with dg.instance_for_test(overrides={"storage": storage, "run_launcher": launcher}) as instance:
        result = dg.execute_job(job, instance=instance)
        events = instance.all_logs(result.run_id)
    logs = {p.name: p.read_text() for p in work.glob("*.log")}
    assert result.success, "\n".join(f"== {n}\n{t[-3000:]}" for n, t in logs.items())

    manifests = [json.loads(line) for line in (work / "jobs.jsonl").read_text().splitlines()]
    steps = {e.step_key for e in events if e.dagster_event and e.dagster_event.is_step_success}
    assert len(manifests) == len(steps) >= 7
    for manifest in manifests:
        pod = manifest["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["DAGSTER_RUN_JOB_NAME"] == "ridehail_pipeline"
        assert env["DAGSTER_RUN_STEP_KEY"] in steps
        assert manifest["metadata"]["namespace"] == "tenant-ridehail"
        assert pod["serviceAccountName"] == "ridehail-runner"
        assert check_manifest(manifest, "job") == []
        review = {"review": {"object": manifest}, "parameters": pod_parameters(tenants)}
        assert PolicySet("pods").evaluate(review, "job") == []
    materialized = {
        e.dagster_event.asset_key.to_user_string()
        for e in events
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert "ridehail/evaluation_reports/driver_churn" in materialized
