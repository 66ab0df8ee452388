"""Shared for the Kubernetes tests: tools they need (skip only when truly absent, fail under
MLPLAT_REQUIRE_SERVICES=1) and one render of everything per test session worker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(tool: str, reason: str) -> None:
    message = f"{tool} is not available: {reason}"
    if os.environ.get("MLPLAT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (MLPLAT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> str:
    from platform_assets.k8s.helm import ToolMissing, helm_binary

    try:
        return helm_binary()
    except ToolMissing as exc:
        require("helm", str(exc))


@pytest.fixture(scope="session")
def chart_schemas():
    """The Dagster chart's values schemas, found as `mlplat k8s values` finds them (CI has them
    in shared/dagster-helm beside its clone)."""
    from platform_assets.k8s.schemas import dagster_chart_schemas

    with dagster_chart_schemas() as schemas:
        if not schemas.found:
            require("the Dagster chart's values schemas", schemas.source)
        yield schemas


@dataclass(frozen=True)
class Rendered:
    out: Path
    output: str


@pytest.fixture(scope="session")
def rendered(helm, tmp_path_factory) -> Rendered:
    """`mlplat k8s render --out DIR` for the demo tenants, once per test worker."""
    from typer.testing import CliRunner

    from platform_assets.cli.main import app

    out = tmp_path_factory.mktemp("k8s") / "out"
    result = CliRunner().invoke(app, ["k8s", "render", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Rendered(out, result.output)
