"""The team-folder tests' defs root: copies of the demo tenants, as a pull request changes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DEMO_DEFS = Path(__file__).resolve().parents[2] / "platform_assets" / "defs"


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A defs root with copies of the demo tenants, as a pull request would change it."""
    root = tmp_path / "defs"
    for tenant in ("ridehail", "payments", "growth"):
        shutil.copytree(DEMO_DEFS / tenant, root / tenant)
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    return root
