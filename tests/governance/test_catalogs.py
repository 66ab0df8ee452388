"""Governance's view of the tenants' YAML: each folder as it is now, parsed again only when one of
its files changed; a folder that does not load fails only its own tenant."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from platform_assets.governance.catalogs import TenantCatalogs, current_tenant
from platform_assets.tenancy.catalog import defs_root
from platform_assets.tenancy.strict_yaml import PlatformConfigError


@pytest.fixture
def root(tmp_path) -> Path:
    copy = tmp_path / "defs"
    shutil.copytree(defs_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_folder_is_parsed_again_only_when_a_file_in_it_changed(root):
    folder = root / "payments"
    first = current_tenant(folder)
    assert current_tenant(folder) is first  # unchanged: the catalog already read

    model = folder / "models" / "fraud_detector" / "defs.yaml"
    model.write_text(model.read_text().replace("min_improvement: 0.002", "min_improvement: 0.01"))
    changed = current_tenant(folder)
    assert changed is not first
    assert changed.models["fraud_detector"].promotion.min_improvement == 0.01
    # What a new object of the mapping sees, as each sensor tick builds one.
    assert TenantCatalogs(root)["payments"] is changed


def test_a_broken_folder_fails_only_its_own_tenant(root):
    bad = root / "growth" / "tenant" / "defs.yaml"
    bad.write_text(bad.read_text() + "  surprise: 1\n")
    catalogs = TenantCatalogs(root)
    assert sorted(catalogs) == ["payments", "ridehail"]
    with pytest.raises(PlatformConfigError, match=r"growth/tenant/defs.yaml: attributes.surprise"):
        catalogs["growth"]
    assert "fraud_detector" in catalogs["payments"].models
    with pytest.raises(KeyError):
        catalogs["nobody"]
