"""Cost metadata on real materializations, cgroup measurement in pods, and measurement failures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.cost.metering import Usage, bill, meter
from platform_assets.k8s.steps import k8s_placement, resources_block
from platform_assets.resources.pricing import PriceCatalog, PricingResource
from platform_assets.tenancy.assets import asset_kwargs
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.specs import ComputeResources, StepResources
from tests.cost.conftest import GPU_GRANT, metered_asset, use_limits

pytestmark = pytest.mark.materialize

KEYS = [
    "cost/tenant",
    "cost/wall_seconds",
    "cost/cpu_seconds",
    "cost/peak_memory_gib",
    "cost/requested_cpu",
    "cost/requested_memory_gib",
    "cost/requested_gpu",
    "cost/measured_by",
    "cost/usd",
]


def test_materialization_records_plausible_cost(instance, monkeypatch, tmp_path):
    use_limits(monkeypatch, tmp_path / "limits.yaml", payments=GPU_GRANT)
    requested = ComputeResources(cpu=2, memory_gib=3, gpu=1)
    result = dg.materialize(
        [metered_asset("payments", requested=requested)],
        instance=instance,
        resources={"pricing": PricingResource()},
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert set(KEYS) <= set(md)
    assert "cost/measurement_errors" not in md
    assert md["cost/tenant"] == "payments"
    assert md["cost/measured_by"] == "os"
    assert 0 < md["cost/cpu_seconds"] <= md["cost/wall_seconds"] * 4 + 0.05
    assert 0.05 < md["cost/peak_memory_gib"] < 16  # the 64 MiB buffer plus the interpreter
    assert (md["cost/requested_cpu"], md["cost/requested_memory_gib"]) == (2, 3)
    prices = PriceCatalog.load()
    expected = bill(
        requested,
        md["cost/wall_seconds"],
        md["cost/cpu_seconds"],
        md["cost/peak_memory_gib"],
        prices,
    )
    # The metadata rounds the wall time to the millisecond (the bill is linear in it while the
    # requested CPU and memory exceed what was used): on a step of a few tens of milliseconds
    # that alone is over 1%.
    rounding = 0.0005 / md["cost/wall_seconds"]
    assert md["cost/usd"] == pytest.approx(expected, rel=1e-3 + rounding)
    assert md["cost/usd"] >= (md["cost/wall_seconds"] - 0.0005) / 3600 * prices.gpu_hour


@pytest.mark.materialize
def test_a_request_over_the_caps_is_billed_and_logged_as_capped(instance):
    requested = ComputeResources(cpu=64, memory_gib=3, gpu=2)  # payments: 4 vCPU, no GPUs
    result = dg.materialize(
        [metered_asset("payments", requested=requested)],
        instance=instance,
        resources={"pricing": PricingResource()},
    )
    [event] = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (md["cost/requested_cpu"], md["cost/requested_gpu"]) == (4, 0)
    logs = [e.message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert (
        "requested resources capped by the platform's limits.yaml: cpu 64 capped to 4; "
        "gpu 2 refused (tenant 'payments' may not use GPUs)"
    ) in logs


@pytest.mark.materialize
def test_the_bill_and_the_rendered_pod_agree_on_a_request_over_the_caps(instance):
    """The issue-21 request (64 vCPU, 512 GiB, 8 GPUs against 4 vCPU, 16 GiB, none): the step's
    pod on `k8s` requests the capped amounts, and the step is billed on exactly those."""
    tenant = load_all()["payments"].tenant
    asked = StepResources(cpu=64, memory_gib=512, gpu=8, accelerator="nvidia_t4")
    kwargs = asset_kwargs(
        tenant, "source", ["sources", "big"], "d", {"python"}, asked, placement=k8s_placement
    )

    @dg.asset(**kwargs)
    def big(pricing: PricingResource):
        with meter(tenant.name, asked) as usage:
            sum(i * i for i in range(100_000))
        return dg.MaterializeResult(metadata=usage.metadata(pricing.catalog()))

    result = dg.materialize([big], instance=instance, resources={"pricing": PricingResource()})
    [event] = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    billed = ComputeResources(
        cpu=md["cost/requested_cpu"],
        memory_gib=md["cost/requested_memory_gib"],
        gpu=md["cost/requested_gpu"],
    )
    assert billed == ComputeResources(cpu=4, memory_gib=16, gpu=0)
    pod = json.loads(big.op.tags["dagster-k8s/config"])
    assert pod["container_config"]["resources"] == resources_block(billed)
    assert "tolerations" not in pod["pod_spec_config"]  # no GPUs, so no accelerator placement


def test_billing_uses_max_of_requested_and_used():
    prices = PriceCatalog(vcpu_hour=1.0, gib_hour=0.1, gpu_hour=10.0)
    small = ComputeResources(cpu=1, memory_gib=1)
    # Used 3 vCPU on average and peaked at 5 GiB: billed on use, not on the request.
    assert bill(small, 3600, 3 * 3600, 5, prices) == pytest.approx(3 * 1.0 + 5 * 0.1)
    # Used less than requested: billed on the request.
    big = ComputeResources(cpu=4, memory_gib=8, gpu=1)
    assert bill(big, 1800, 60, 0.5, prices) == pytest.approx(0.5 * (4 + 0.8 + 10))


def test_another_pod_the_step_held_is_billed_as_reserved():
    """A trainer pod on Kubernetes: its grant for as long as it ran, on top of the step's."""
    prices = PriceCatalog(vcpu_hour=1.0, gib_hour=0.1, gpu_hour=10.0)
    usage = Usage("ridehail", ComputeResources(cpu=1, memory_gib=2), wall_seconds=3600)
    alone = usage.cost(prices)
    usage.reserve(ComputeResources(cpu=2, memory_gib=4), 1800)
    assert usage.cost(prices) == pytest.approx(alone + 0.5 * (2 + 0.4))
    assert usage.metadata(prices)["cost/other_pods"].value == [
        {"cpu": 2, "memory_gib": 4, "wall_seconds": 1800}
    ]


def _cgroup_v2(root: Path, usec: int, peak: int) -> None:
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 1\nsystem_usec 1\n")
    (root / "memory.peak").write_text(f"{peak}\n")


def test_pod_measures_from_cgroup_v2(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    _cgroup_v2(tmp_path, 1_000_000, 2**30)
    with meter("payments", ComputeResources(), cgroup_root=tmp_path) as usage:
        _cgroup_v2(tmp_path, 3_500_000, 3 * 2**30)
    assert usage.measured_by == "cgroup v2"
    assert usage.cpu_seconds == pytest.approx(2.5)
    assert usage.peak_memory_gib == pytest.approx(3.0)
    assert usage.errors == []


def test_pod_measures_from_cgroup_v1(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("1000000000\n")
    (tmp_path / "memory" / "memory.max_usage_in_bytes").write_text(str(2 * 2**30))
    with meter("payments", ComputeResources(), cgroup_root=tmp_path) as usage:
        (tmp_path / "cpuacct" / "cpuacct.usage").write_text("4000000000\n")
    assert usage.measured_by == "cgroup v1"
    assert usage.cpu_seconds == pytest.approx(3.0)
    assert usage.peak_memory_gib == pytest.approx(2.0)


def test_unreadable_cgroup_is_recorded_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with meter("payments", ComputeResources(), cgroup_root=tmp_path / "missing") as usage:
        sum(range(10_000))
    assert usage.measured_by == "os"
    assert "cgroup cpu unreadable" in usage.errors[0]
    md = usage.metadata(PriceCatalog.load())
    assert "cgroup cpu unreadable" in md["cost/measurement_errors"]
    assert md["cost/usd"] >= 0  # priced all the same, on the request


def test_missing_memory_peak_falls_back_to_sampled_rss(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    _cgroup_v2(tmp_path, 0, 0)
    (tmp_path / "memory.peak").unlink()  # kernels before 5.19 have no memory.peak
    with meter("payments", ComputeResources(), cgroup_root=tmp_path) as usage:
        pass
    assert usage.measured_by == "cgroup v2"
    assert "cgroup memory peak" in usage.errors[0]
    assert usage.peak_memory_gib > 0
