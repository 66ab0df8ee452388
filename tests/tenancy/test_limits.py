"""Limits belong to the platform: limits.yaml, the caps it puts on requests, and CODEOWNERS."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from platform_assets.governance.codeowners import render, repo_codeowners
from platform_assets.tenancy.catalog import PlatformConfigError, load_all
from platform_assets.tenancy.limits import (
    LIMITS_ENV,
    LIMITS_PATH,
    effective_resources,
    limits_for,
    load_limits,
    retrain_limits,
)
from platform_assets.tenancy.specs import ComputeResources


def _limits_file(tmp_path: Path, monkeypatch, **changes) -> Path:
    doc = yaml.safe_load(LIMITS_PATH.read_text())
    doc.update(changes)
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv(LIMITS_ENV, str(path))
    return path


def test_demo_tenants_limits_come_from_the_platform_file():
    limits = load_limits()
    assert {n: (v.budget.monthly_usd, v.max_concurrent_runs) for n, v in limits.items()} == {
        "ridehail": (400, 3),
        "payments": (600, 4),
        "growth": (300, 2),
    }
    assert set(limits) == set(load_all())


def test_a_tenant_not_listed_gets_the_defaults():
    defaults = limits_for("someone_new")
    assert defaults.budget.monthly_usd == 100 and defaults.max_concurrent_runs == 2
    assert not defaults.gpu_allowed


def test_a_listed_tenant_falls_back_to_defaults_field_by_field(tmp_path, monkeypatch):
    _limits_file(tmp_path, monkeypatch, tenants={"ridehail": {"gpu_allowed": True}})
    ridehail = limits_for("ridehail")
    assert ridehail.gpu_allowed and ridehail.budget.monthly_usd == 100
    assert ridehail.caps == limits_for("nobody").caps


def test_requests_are_capped_and_gpus_need_permission(tmp_path, monkeypatch):
    big = ComputeResources(cpu=64, memory_gib=512, gpu=4)
    assert effective_resources("ridehail", big) == ComputeResources(cpu=4, memory_gib=16, gpu=0)
    small = ComputeResources(cpu=0.5, memory_gib=1, gpu=0)
    assert effective_resources("ridehail", small) == small
    _limits_file(
        tmp_path,
        monkeypatch,
        tenants={"ridehail": {"caps": {"cpu": 8, "memory_gib": 64, "gpu": 2}, "gpu_allowed": True}},
    )
    assert effective_resources("ridehail", big) == ComputeResources(cpu=8, memory_gib=64, gpu=2)


@pytest.mark.parametrize(
    ("tenants", "field", "reason"),
    [
        (
            {"ridehail": {"budget": {"monthly_usd": ".inf"}}},
            "tenants.ridehail.budget.monthly_usd",
            "inf is not a finite number",
        ),
        (
            {"ridehail": {"max_concurrent_runs": 2.5}},
            "tenants.ridehail.max_concurrent_runs",
            "must be an integer, not 2.5",
        ),
        (
            {"ridehail": {"budget": {"monthly_usd": 1, "override": "yes"}}},
            "tenants.ridehail.budget.override",
            "must be true or false, not 'yes'",
        ),
    ],
    ids=["inf-budget", "fractional-quota", "string-override"],
)
def test_a_bad_limits_file_names_the_field(tmp_path, monkeypatch, tenants, field, reason):
    path = _limits_file(tmp_path, monkeypatch, tenants=tenants)
    path.write_text(path.read_text().replace("'.inf'", ".inf"))
    with pytest.raises(PlatformConfigError) as excinfo:
        limits_for("ridehail")
    assert str(excinfo.value) == f"{path.resolve()}: {field}: {reason}"


def test_retrain_cooldown_bounds_fall_back_field_by_field(tmp_path, monkeypatch):
    assert retrain_limits("nobody").model_dump() == {
        "min_cooldown_hours": 1,
        "max_cooldown_hours": 720,
    }
    _limits_file(
        tmp_path, monkeypatch, tenants={"ridehail": {"retrain": {"min_cooldown_hours": 6}}}
    )
    assert retrain_limits("ridehail").model_dump() == {
        "min_cooldown_hours": 6,
        "max_cooldown_hours": 720,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"tenants": {"ridehail": {"retrain": {"min_cooldown_hours": 1000}}}},
            "tenants.ridehail.retrain",
        ),
        ({"defaults": {"retrain": {"min_cooldown_hours": 1000}}}, "defaults.retrain"),
    ],
    ids=["tenant", "defaults"],
)
def test_retrain_bounds_that_leave_no_cooldown_are_refused(tmp_path, monkeypatch, changes, field):
    doc = yaml.safe_load(LIMITS_PATH.read_text())
    if "defaults" in changes:
        changes = {"defaults": {**doc["defaults"], **changes["defaults"]}}
    path = _limits_file(tmp_path, monkeypatch, **changes)
    with pytest.raises(PlatformConfigError) as excinfo:
        limits_for("ridehail")
    assert str(excinfo.value).startswith(
        f"{path.resolve()}: {field}: min_cooldown_hours 1000 is above max_cooldown_hours 720"
    )


def test_committed_codeowners_is_up_to_date():
    path, text = repo_codeowners()
    assert path.read_text() == text, "run `mlplat codeowners write` and commit .github/CODEOWNERS"


def test_codeowners_maps_tenant_folders_to_owners_and_limits_to_the_platform():
    text = render(load_all(), "platform_assets/defs", ["team:ml-platform", "ada@x.example"], "org")
    lines = dict(line.split(None, 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["/platform_assets/defs/ridehail/"] == "@org/ridehail-ml alice@ridehail.example"
    assert lines["/platform_assets/limits/"] == "@org/ml-platform ada@x.example"
    assert lines["*"] == lines["/.github/CODEOWNERS"] == lines["/platform_assets/limits/"]


@pytest.mark.parametrize(
    ("tenants", "field", "reason"),
    [
        (
            {"payments": {"allowed_accelerators": ["tpu_v5"]}},
            "tenants.payments.allowed_accelerators",
            "'tpu_v5' is not in catalog.accelerators (known: nvidia_t4)",
        ),
        (
            {"payments": {"allowed_node_pools": ["control_plane"]}},
            "tenants.payments.allowed_node_pools",
            "'control_plane' is not in catalog.node_pools (known: batch)",
        ),
    ],
    ids=["unknown-accelerator", "unknown-node-pool"],
)
def test_a_tenant_may_be_allowed_only_catalogued_placements(
    tmp_path, monkeypatch, tenants, field, reason
):
    path = _limits_file(tmp_path, monkeypatch, tenants=tenants)
    with pytest.raises(PlatformConfigError) as excinfo:
        limits_for("payments")
    assert str(excinfo.value) == f"{path.resolve()}: {field}: {reason}"
