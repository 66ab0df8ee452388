"""The code location loads fast, carries the platform's conventions, and Dagster's own tools
accept it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from platform_assets.definitions import defs
from platform_assets.tenancy.specs import ASSET_TYPES, PLATFORM_ASSET_TYPES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def definitions():
    return defs()


def test_importing_definitions_does_not_import_heavy_libraries():
    code = (
        "import sys, json, time; t = time.perf_counter();"
        "import platform_assets.definitions as d; d.defs();"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'loaded': [m for m in "
        "('mlflow', 'feast', 'great_expectations', 'sklearn', 'duckdb', 'matplotlib', 'pandas', "
        "'xgboost', 'lightgbm', 'treelite') "
        "if m in sys.modules]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []


def test_every_asset_carries_tenant_conventions(definitions):
    specs = list(definitions.resolve_all_asset_specs())
    assert len(specs) >= 24
    for spec in specs:
        tenant = spec.key.path[0]
        assert spec.group_name == tenant, spec.key
        assert spec.tags["tenant"] == tenant, spec.key
        platform_only = PLATFORM_ASSET_TYPES if tenant == "platform" else ()
        assert spec.tags["asset_type"] in ASSET_TYPES + platform_only, spec.key
        assert spec.owners, spec.key
        assert spec.description, spec.key
        assert spec.kinds, spec.key


def test_every_asset_type_for_every_tenant(definitions):
    seen = {(s.key.path[0], s.tags["asset_type"]) for s in definitions.resolve_all_asset_specs()}
    for tenant in ("ridehail", "payments", "growth"):
        for asset_type in ASSET_TYPES:
            assert (tenant, asset_type) in seen


def test_k8s_deployment_uses_k8s_job_executor_per_tenant_namespace(monkeypatch):
    monkeypatch.setenv("MLPLAT_ENV", "k8s")
    for var in ("MLPLAT_REDIS", "MLPLAT_LAKE_URI", "MLPLAT_FEAST_REGISTRY_URL"):
        monkeypatch.setenv(var, "127.0.0.1:6379" if "REDIS" in var else "/tmp/x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    repo = defs().get_repository_def()
    job = repo.get_job("payments_pipeline")
    assert job.executor_def.name == "k8s_payments"
    config = job.executor_def.config_schema.resolve_config({}).value["config"]
    assert (config["job_namespace"], config["service_account_name"]) == (
        "tenant-payments",
        "payments-runner",
    )
    # One executor has one namespace: no pipeline across tenants on Kubernetes.
    assert not repo.has_job("ml_pipeline")
    spec = next(s for s in repo.assets_defs_by_key if s.path[0] == "payments")
    op_tags = repo.assets_defs_by_key[spec].op.tags
    k8s = json.loads(op_tags["dagster-k8s/config"])
    assert k8s["pod_template_spec_metadata"]["labels"]["mlplat/tenant"] == "payments"


def test_unknown_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("MLPLAT_ENV", "prod-ish")
    with pytest.raises(
        ValueError, match="MLPLAT_ENV='prod-ish' is not one of local, services, k8s"
    ):
        defs()


def test_dagster_definitions_validate():
    out = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "platform_assets.definitions"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MLPLAT_ENV": "local"},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dg_check_defs():
    out = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MLPLAT_ENV": "local"},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_services_deployment_requires_a_shared_platform_database(monkeypatch):
    from platform_assets.env import platform_db_url

    monkeypatch.setenv("MLPLAT_ENV", "services")
    monkeypatch.delenv("MLPLAT_DB_URL", raising=False)
    with pytest.raises(ValueError, match="MLPLAT_DB_URL must be set when MLPLAT_ENV is"):
        platform_db_url()
    monkeypatch.setenv("MLPLAT_DB_URL", "postgresql://db/platform")
    assert platform_db_url() == "postgresql://db/platform"


def _services_env(monkeypatch, **overrides):
    env = {
        "MLPLAT_ENV": "services",
        "MLPLAT_REDIS": "127.0.0.1:6379,db=3,password=redis-secret",
        "MLPLAT_LAKE_URI": "/tmp/lake",
        "MLPLAT_FEAST_REGISTRY_URL": "postgresql://u:pg-secret@127.0.0.1:5432/feast",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-secret",
        **overrides,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_services_secrets_are_not_resolved_into_the_definitions(monkeypatch):
    _services_env(monkeypatch)
    definitions = defs()
    shown = repr(definitions.resources) + json.dumps(
        {k: r.model_dump() for k, r in definitions.resources.items()}, default=str
    )
    for secret in ("redis-secret", "pg-secret", "mlflow-secret"):
        assert secret not in shown
    feast = definitions.resources["feast"]
    assert feast.registry_url == "MLPLAT_FEAST_REGISTRY_URL"  # the EnvVar's name, not its value


def test_feature_store_yaml_with_credentials_is_private(monkeypatch, tmp_path):
    _services_env(monkeypatch)
    feast = defs().resources["feast"].process_config_and_initialize()
    feast = feast.model_copy(update={"root": str(tmp_path)})
    path = feast.repo("ridehail") / "feature_store.yaml"
    assert "pg-secret" in path.read_text()  # Feast needs it, so only its owner may read it
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # a file left readable by an older version is made private again
    feast.repo("ridehail")
    assert path.stat().st_mode & 0o777 == 0o600


def test_services_dagster_storage_url_must_use_psycopg2(monkeypatch):
    _services_env(monkeypatch, MLPLAT_DAGSTER_PG_URL="postgresql://u:pg-secret@db:5432/dagster")
    with pytest.raises(
        ValueError,
        match=r"MLPLAT_DAGSTER_PG_URL uses the driver 'postgresql'; Dagster's Postgres storage "
        r"needs psycopg2: write it as postgresql\+psycopg2://",
    ):
        defs()


def test_services_dagster_storage_url_must_be_a_url(monkeypatch):
    _services_env(monkeypatch, MLPLAT_DAGSTER_PG_URL="db.example:5432/dagster")
    with pytest.raises(ValueError, match="MLPLAT_DAGSTER_PG_URL is not a database URL"):
        defs()


def test_services_tracking_uri_must_be_a_server(monkeypatch):
    _services_env(monkeypatch, MLFLOW_TRACKING_URI="postgresql://db/mlflow")
    with pytest.raises(
        ValueError,
        match=r"MLFLOW_TRACKING_URI='postgresql://db/mlflow' must be an http\(s\):// tracking "
        "server when MLPLAT_ENV is 'services' or 'k8s'",
    ):
        defs()
