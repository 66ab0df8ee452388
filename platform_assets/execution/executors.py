"""Executor per deployment: processes locally, one Kubernetes job per step on `k8s`."""

from __future__ import annotations

import dagster as dg

from platform_assets.execution.env import Deployment
from platform_assets.tenancy.specs import TenantSpec


def executor_for(deployment: Deployment, tenant: TenantSpec | None = None) -> dg.ExecutorDefinition:
    if deployment != "k8s":
        # Two cores here; more parallel steps only contend for them.
        return dg.multiprocess_executor.configured({"max_concurrent": 2})
    from dagster_k8s import k8s_job_executor

    config: dict = {"max_concurrent": 8}
    if tenant is not None:
        config |= {
            "job_namespace": tenant.namespace,
            "service_account_name": tenant.runner_service_account,
            "labels": {"mlplat/tenant": tenant.name},
        }
    return k8s_job_executor.configured(config, name=f"k8s_{tenant.name if tenant else 'platform'}")
