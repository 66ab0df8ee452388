"""Executor per deployment: processes locally, one Kubernetes job per step on `k8s`."""

from __future__ import annotations

import dagster as dg

from platform_assets.env import Deployment
from platform_assets.k8s.config import PLATFORM_RUNNER, platform, services_secret
from platform_assets.tenancy.specs import TenantSpec

PRELOAD = (
    "platform_assets.composition.locations",
    "pandas",
    "pyarrow.parquet",
    "duckdb",
    "sklearn.ensemble",
    "mlflow.sklearn",
    "feast",
    "great_expectations",
    "matplotlib.pyplot",
)


def executor_for(
    deployment: Deployment, tenant: TenantSpec | None = None, preload: bool = False
) -> dg.ExecutorDefinition:
    """`preload` is for the pipeline jobs: many steps that all need the heavy libraries."""
    if deployment != "k8s":
        if not preload:
            return dg.multiprocess_executor.configured({"max_concurrent": 2}, name="multiprocess")
        # Each step is its own process. A fork server that has already imported the platform
        # and its heavy libraries starts each one in milliseconds instead of ~10 s of imports;
        # importing them all once costs ~20 s, which only pays off over many steps.
        return dg.multiprocess_executor.configured(
            {
                "max_concurrent": 2,
                "start_method": {"forkserver": {"preload_modules": list(PRELOAD)}},
            },
            name="multiprocess_preloaded",
        )
    from dagster_k8s import k8s_job_executor

    # Namespace and service account always together: a step pod starts where its service
    # account exists. Tenant jobs run in the tenant's namespace, everything else in the
    # platform's; each step reads its own tenant's services Secret there.
    if tenant is None:
        where = {"job_namespace": platform().namespace, "service_account_name": PLATFORM_RUNNER}
        owner = "platform"
    else:
        where = {
            "job_namespace": tenant.namespace,
            "service_account_name": tenant.runner_service_account,
        }
        owner = tenant.name
    config = {
        "max_concurrent": platform().steps_per_run,
        **where,
        "env_secrets": [services_secret(owner)],
        "labels": {"mlplat/tenant": owner},
    }
    return k8s_job_executor.configured(config, name=f"k8s_{tenant.name if tenant else 'platform'}")
