"""Quotas: the rendered block, rewriting only the marked block, and the run queue obeying it."""

from __future__ import annotations

import json
import logging
import uuid

import dagster as dg
import yaml
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from platform_assets.composition.locations import tenant_definitions
from platform_assets.cost.quotas import BEGIN, END, apply_pool_limits, quota_config, write_quotas
from platform_assets.tenancy.assets import GPU_POOL
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.limits import limits_for
from tests.cost.conftest import GPU_GRANT, use_limits
from tests.platform_sandbox import sandbox

ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("mlplat"), "__repository__"), "job"
)


def test_block_has_a_limit_per_tenant_from_the_platform_limits():
    catalogs = load_all()
    runs = quota_config(catalogs)["concurrency"]["runs"]
    limits = runs["tag_concurrency_limits"]
    assert limits[0] == {
        "key": "tenant",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": max(limits_for(n).max_concurrent_runs for n in catalogs),
    }
    assert {lim["value"]: lim["limit"] for lim in limits[1:]} == {
        "ridehail": 3,
        "payments": 4,
        "growth": 2,
    }


def test_write_replaces_only_the_marked_block(tmp_path):
    path = tmp_path / "dagster.yaml"
    path.write_text("telemetry:\n  enabled: false\n")
    first = write_quotas(path, load_all())
    assert first.startswith("telemetry:\n  enabled: false\n\n" + BEGIN)
    path.write_text(first + "run_monitoring:\n  enabled: true\n")
    second = write_quotas(path, load_all())
    assert second.count(BEGIN) == 1 and second.count(END) == 1
    assert second.startswith("telemetry:") and second.endswith("run_monitoring:\n  enabled: true\n")
    assert yaml.safe_load(second)["concurrency"] == quota_config(load_all())["concurrency"]
    assert second.count("run_monitoring:") == 1


def test_write_replaces_an_unmarked_run_coordinator_keeping_its_ceiling(tmp_path):
    path = tmp_path / "dagster.yaml"
    path.write_text(
        "telemetry:\n  enabled: false\n\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n  config:\n    max_concurrent_runs: 4\n"
        "\nrun_monitoring:\n  enabled: true\n"
    )
    text = write_quotas(path, load_all())
    config = yaml.safe_load(text)
    assert config["telemetry"] == {"enabled": False}
    assert config["run_monitoring"] == {"enabled": True}
    assert "config" not in config["run_coordinator"]
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 4
    assert write_quotas(path, load_all()) == text  # idempotent once marked
    with dg.instance_for_test(overrides=yaml.safe_load(text)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4


def _queue(instance, tenant: str, status=DagsterRunStatus.QUEUED) -> None:
    instance.add_run(
        DagsterRun(
            job_name="job",
            run_id=str(uuid.uuid4()),
            status=status,
            tags={"tenant": tenant},
            remote_job_origin=ORIGIN,
        )
    )


def test_run_queue_holds_back_a_tenants_extra_runs():
    catalogs = load_all()
    with dg.instance_for_test(overrides=quota_config(catalogs)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "tenant", "value": "growth", "limit": 2} in limits
        _queue(instance, "growth", DagsterRunStatus.STARTED)  # already running: one slot used
        for _ in range(4):
            _queue(instance, "growth")
        for _ in range(2):
            _queue(instance, "payments")
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        daemon._logger = logging.getLogger(__name__)  # set by the daemon controller normally
        dequeued = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
        launched = [r.tags["tenant"] for r in dequeued]
        assert launched.count("growth") == limits_for("growth").max_concurrent_runs - 1
        assert launched.count("payments") == 2


def test_gpu_pool_slots_are_set_on_the_instance(instance):
    assert apply_pool_limits(instance) == {"gpu": 1}
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1


def test_steps_that_request_gpus_queue_in_the_gpu_pool(monkeypatch, tmp_path):
    use_limits(monkeypatch, tmp_path / "limits.yaml", ridehail=GPU_GRANT)
    with sandbox(monkeypatch) as (root, build):
        path = root / "ridehail" / "models" / "driver_churn" / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["resources"] = {
            "cpu": 4,
            "memory_gib": 16,
            "gpu": 1,
            "accelerator": "nvidia_t4",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        pools = {
            key.to_user_string(): assets_def.op.pool
            for assets_def in build().assets
            for key in assets_def.keys
        }
    for kind in ("training_sets", "models", "evaluation_reports", "predictions", "drift"):
        assert pools[f"ridehail/{kind}/driver_churn"] == GPU_POOL
    assert pools["ridehail/features/driver_stats"] is None  # the tenant's CPU default


def test_a_gpu_request_of_a_tenant_without_gpus_is_capped_and_said(monkeypatch):
    with sandbox(monkeypatch) as (root, build):
        path = root / "ridehail" / "models" / "driver_churn" / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["resources"] = {
            "cpu": 64,
            "memory_gib": 16,
            "gpu": 1,
            "accelerator": "nvidia_t4",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        # keyed by their assets: the model's champion_alias check is a separate,
        # check-only definition with no asset key of its own; as the k8s deployment builds
        # them, the only one whose steps carry a pod
        assets = {
            key.to_user_string(): a
            for a in tenant_definitions(load_all(root)["ridehail"], "k8s").assets
            if isinstance(a, dg.AssetsDefinition)
            for key in a.keys
        }
    model = assets["ridehail/models/driver_churn"]
    assert model.op.pool is None
    assert model.specs_by_key[model.key].metadata["resources/capped"] == (
        "requested resources capped by the platform's limits.yaml: cpu 64 capped to 4; "
        "gpu 1 refused (tenant 'ridehail' may not use GPUs)"
    )
    k8s = json.loads(model.op.tags["dagster-k8s/config"])["container_config"]["resources"]
    assert k8s["requests"]["cpu"] == "4" and "nvidia.com/gpu" not in k8s["limits"]
