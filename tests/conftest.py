"""Shared fixtures: an isolated platform (data root, Dagster home) per test, and real services.

Service tests skip when Postgres or Redis is not reachable, unless MLPLAT_REQUIRE_SERVICES=1
(set by .ci/run), which turns the skip into a failure. The S3 API server (moto's standalone
server) is started by the suite itself, on a free loopback port, so it never skips.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

POSTGRES_URL = os.environ.get(
    "MLPLAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MLPLAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        skip_or_fail(f"{name} is not reachable at {host}:{port}")


def skip_or_fail(message: str) -> None:
    """Skip a test whose tool or service this machine lacks; fail instead under
    MLPLAT_REQUIRE_SERVICES=1 (CI), where everything must be present."""
    if os.environ.get("MLPLAT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (MLPLAT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


# moto accepts any credentials; these only have to be present and the same everywhere.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mlplat-test",
    "AWS_SECRET_ACCESS_KEY": "mlplat-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _drain(stream) -> None:
    for _ in stream:
        pass


def start_s3_server(port: int = 0) -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server in its own process on 127.0.0.1:`port` (0: a free one):
    (process, URL). It keeps its buckets in memory: a server started again starts empty."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # werkzeug announces the port it bound
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            # Keep draining its request log so the server never blocks on a full pipe.
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError(f"moto server exited with {proc.wait()} before listening")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a real S3 API server on loopback for the whole session (boto3, s3fs and pyarrow
    speak to it over HTTP); credentials: S3_CREDENTIALS."""
    proc, url = start_s3_server()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's S3 server, with this test's environment pointing the
    AWS clients (pyarrow, boto3, MLflow) at that server."""
    import boto3

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    name = f"mlplat-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def trainer_envs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Team trainers' environments, built once per test process (keyed by their lock)."""
    return tmp_path_factory.mktemp("trainer-envs")


@pytest.fixture
def platform_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainer_envs: Path) -> Path:
    """A fresh local deployment: lake, Feast repos, MLflow and Dagster home under tmp_path."""
    monkeypatch.setenv("MLPLAT_ENV", "local")
    monkeypatch.setenv("MLPLAT_TRAINER_ENVS", str(trainer_envs))
    monkeypatch.setenv("MLPLAT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return tmp_path


@pytest.fixture
def instance(platform_home: Path):
    with dg.instance_for_test(temp_dir=str(platform_home / "dagster_home")) as inst:
        yield inst
