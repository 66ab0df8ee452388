"""Shared fixtures: an isolated platform (data root, Dagster home) per test, and real services.

Service tests skip when Postgres or Redis is not reachable, unless MLPLAT_REQUIRE_SERVICES=1
(set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import socket
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
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
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


@pytest.fixture
def platform_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local deployment: lake, Feast repos, MLflow and Dagster home under tmp_path."""
    monkeypatch.setenv("MLPLAT_ENV", "local")
    monkeypatch.setenv("MLPLAT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return tmp_path


@pytest.fixture
def instance(platform_home: Path):
    with dg.instance_for_test(temp_dir=str(platform_home / "dagster_home")) as inst:
        yield inst
