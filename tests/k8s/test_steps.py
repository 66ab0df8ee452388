"""A step's Kubernetes config: the platform's template filled in from typed requests only:
requests and limits after the platform's caps, GPUs of the accelerator class and the node pool
from limits.yaml's catalog (where the tenant may use them), captured through dagster-k8s's own
step handler and checked like every other Job."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from platform_assets.composition.executors import executor_for
from platform_assets.features.sandbox import SandboxError, sandbox
from platform_assets.k8s.jobs import capture_jobs
from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.render import pod_parameters, tenant_chart_values
from platform_assets.k8s.schemas import check_manifest
from platform_assets.k8s.steps import step_k8s_config
from platform_assets.tenancy import limits
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.locations import CodeLocation
from platform_assets.tenancy.specs import StepResources

LIMITS = """
platform:
  owners: [team:ml-platform]
  github_org: mlplat
defaults:
  budget: {monthly_usd: 10}
  max_concurrent_runs: 1
  caps: {cpu: 1, memory_gib: 1, gpu: 0}
  gpu_allowed: false
tenants:
  payments:
    budget: {monthly_usd: 600}
    max_concurrent_runs: 2
    caps: {cpu: 4, memory_gib: 16, gpu: 2}
    gpu_allowed: true
    allowed_accelerators: [nvidia_t4]
    allowed_node_pools: [batch]
catalog:
  accelerators:
    nvidia_t4:
      description: T4 nodes
      resource: nvidia.com/gpu
      node_selector: {mlplat/accelerator: nvidia-t4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    amd_mi300:
      description: MI300 nodes
      resource: amd.com/gpu
      node_selector: {mlplat/accelerator: amd-mi300}
  node_pools:
    batch:
      description: spot nodes
      node_selector: {mlplat/pool: batch}
      tolerations: [{key: mlplat/pool, operator: Equal, value: batch, effect: NoSchedule}]
      priority_class: mlplat-batch
"""
T4 = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
BATCH = {"key": "mlplat/pool", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}


@pytest.fixture
def gpu_limits(tmp_path, monkeypatch):
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    monkeypatch.setenv("MLPLAT_LIMITS", str(path))
    return path


def test_requests_above_the_caps_are_capped(gpu_limits):
    spec = load_all()["growth"].tenant  # defaults: 1 CPU, 1 GiB, no GPUs
    asked = StepResources(cpu=8, memory_gib=32, gpu=4, accelerator="nvidia_t4", node_pool="batch")
    config = step_k8s_config(spec, asked, "growth/x")
    resources = config["container_config"]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "1", "memory": "1Gi"}
    # Neither the GPUs nor the pool growth may not use: nothing of the catalog's placement.
    for field in ("tolerations", "node_selector", "priority_class_name"):
        assert field not in config["pod_spec_config"]


def test_gpu_steps_of_allowed_tenants_get_gpus_and_the_toleration(gpu_limits):
    assert limits.limits_for("payments").gpu_allowed
    spec = load_all()["payments"].tenant
    asked = StepResources(cpu=2, memory_gib=8, gpu=1, accelerator="nvidia_t4")
    config = step_k8s_config(spec, asked, "payments/m")
    assert config["container_config"]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "8Gi",
        "nvidia.com/gpu": "1",
    }
    assert config["pod_spec_config"]["tolerations"] == [T4]
    assert config["pod_spec_config"]["node_selector"] == {"mlplat/accelerator": "nvidia-t4"}


def test_an_accelerator_class_the_tenant_may_not_use_gets_no_gpus(gpu_limits):
    spec = load_all()["payments"].tenant
    asked = StepResources(cpu=2, memory_gib=8, gpu=1, accelerator="amd_mi300")
    config = step_k8s_config(spec, asked, "payments/m")
    assert config["container_config"]["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert "node_selector" not in config["pod_spec_config"]
    assert limits.grant("payments", asked)[1] == (
        "requested resources capped by the platform's limits.yaml: gpu 1 refused (tenant "
        "'payments' may not use accelerator 'amd_mi300')"
    )


def test_a_node_pool_brings_its_selector_tolerations_and_priority_class(gpu_limits):
    spec = load_all()["payments"].tenant
    asked = StepResources(gpu=1, accelerator="nvidia_t4", node_pool="batch")
    pod = step_k8s_config(spec, asked, "payments/m")["pod_spec_config"]
    assert pod["node_selector"] == {"mlplat/pool": "batch", "mlplat/accelerator": "nvidia-t4"}
    assert pod["tolerations"] == [BATCH, T4]
    assert pod["priority_class_name"] == "mlplat-batch"


def test_the_quota_gives_gpus_only_of_the_allowed_accelerator_classes(gpu_limits):
    tenants = {n: c.tenant for n, c in load_all().items()}
    hard = tenant_chart_values("payments", tenants["payments"])["quota"]["hard"]
    # 2 concurrent runs x 2 steps per run x 2 GPUs; amd.com/gpu is catalogued, not allowed.
    assert (hard["requests.nvidia.com/gpu"], "requests.amd.com/gpu" in hard) == ("8", False)
    growth = tenant_chart_values("growth", tenants["growth"])["quota"]["hard"]
    assert growth["requests.nvidia.com/gpu"] == "0"


def test_the_pod_is_the_platforms_template_whatever_the_tenant_yaml_says(gpu_limits):
    """Only typed requests reach the pod: its config holds the template's fields and no more
    (no command, env, volumes or scheduling of anyone else's choosing)."""
    spec = load_all()["payments"].tenant
    config = step_k8s_config(spec, spec.resources, "payments/x")
    assert set(config) == {
        "container_config",
        "pod_spec_config",
        "pod_template_spec_metadata",
        "job_metadata",
    }
    assert set(config["container_config"]) == {"resources", "security_context", "volume_mounts"}
    assert set(config["pod_spec_config"]) == {
        "automount_service_account_token",
        "security_context",
        "volumes",
    }


def test_a_gpu_step_job_from_dagster_k8s_is_valid_and_passes_policy(gpu_limits):
    tenants = {n: c.tenant for n, c in load_all().items()}
    spec = tenants["payments"]
    tags = {
        "dagster-k8s/config": json.dumps(
            step_k8s_config(
                spec,
                StepResources(
                    cpu=0.5, memory_gib=3, gpu=1, accelerator="nvidia_t4", node_pool="batch"
                ),
                "payments/models/gpu_model",
            )
        )
    }

    @dg.op(tags=tags)
    def train():
        return 1

    @dg.job(executor_def=executor_for("k8s", spec), tags={"tenant": "payments"})
    def payments_gpu():
        train()

    location = CodeLocation("payments", ("payments",))
    [run, step] = capture_jobs({"payments_gpu": (payments_gpu, location)}, tenants)
    assert (run.step, step.step) == ("run", "train")
    pod = step.manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "3Gi",
        "nvidia.com/gpu": "1",
    }
    assert pod["tolerations"] == [BATCH, T4]
    assert pod["priorityClassName"] == "mlplat-batch"
    assert step.manifest["metadata"]["namespace"] == "tenant-payments"
    assert check_manifest(step.manifest, "gpu.yaml") == []
    review = {"review": {"object": step.manifest}, "parameters": pod_parameters(tenants)}
    assert PolicySet("pods").evaluate(review, "gpu.yaml") == []


@pytest.fixture
def consumer_group(tmp_path, monkeypatch):
    """The platform groups growth and ridehail into one code location, `consumer`."""
    from platform_assets.tenancy import locations

    groups = tmp_path / "locations.yaml"
    groups.write_text("groups:\n  consumer: [growth, ridehail]\n")
    monkeypatch.setattr(locations, "GROUPS_FILE", groups)
    locations.location_of.cache_clear()
    yield
    locations.location_of.cache_clear()


def test_a_grouped_tenants_pods_carry_the_groups_code_location(consumer_group):
    """The cost tool attributes by code location: ours must be the one Dagster labels with."""
    tenants = {n: c.tenant for n, c in load_all().items()}
    spec = tenants["ridehail"]
    config = step_k8s_config(spec, spec.resources, "ridehail/sources/trips")

    @dg.op(tags={"dagster-k8s/config": json.dumps(config)})
    def ingest():
        return 1

    @dg.job(executor_def=executor_for("k8s", spec), tags={"tenant": "ridehail"})
    def ridehail_job():
        ingest()

    location = CodeLocation("consumer", ("growth", "ridehail"))
    [run, step] = capture_jobs({"ridehail_job": (ridehail_job, location)}, tenants)
    labels = step.manifest["spec"]["template"]["metadata"]["labels"]
    assert labels["mlplat/code-location"] == labels["dagster/code-location"] == "consumer"
    assert labels["mlplat/tenant"] == "ridehail"
    assert (
        step_k8s_config(tenants["payments"], spec.resources, "payments/x")["job_metadata"][
            "labels"
        ]["mlplat/code-location"]
        == "payments"
    )  # not grouped: its own


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("select getenv('DAGSTER_PG_PASSWORD')", "getenv does not exist"),
        ("select * from read_text('/proc/self/environ')", "file system operations are disabled"),
    ],
)
def test_team_sql_cannot_read_the_step_pods_environment(monkeypatch, sql, refusal):
    """A step pod holds Dagster's storage password (docs/kubernetes.md); the only tenant input
    that runs in it, feature SQL, runs where no environment or file can be read."""
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "s3cret")
    with pytest.raises(SandboxError, match=refusal), sandbox({}, limits.SqlLimits()) as box:
        box.query(sql).fetchall()
