"""What a tenant's step pod carries on the `k8s` deployment, as the `dagster-k8s/config` op tag
dagster-k8s merges into the Job it submits. The platform's own template, filled in from typed
requests only: requests and limits after the platform's caps (`tenancy.limits.grant`, what the
step is billed on too), GPUs of the granted accelerator class and the node selector, tolerations
and priority class of the catalog entries the tenant may use (limits.yaml), a restricted
security context and cost-attribution labels. Nothing a tenant writes is merged in.

The namespace and service account are not here: dagster-k8s takes both from the executor (and
the code location), so they always travel together.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from platform_assets.k8s.config import k8s_name, platform, quantity, services_secret
from platform_assets.tenancy.limits import (
    Toleration,
    allowed_placements,
    effective_resources,
    limits_for,
    placement,
)
from platform_assets.tenancy.locations import location_of
from platform_assets.tenancy.specs import ComputeResources, TenantSpec

# The non-root user the image runs as (Dockerfile).
RUN_AS_USER = 10001
# What Dagster's pods run (argv prefixes): a step, a run worker, a code server.
ENTRYPOINTS = (
    ("dagster", "api", "execute_step"),
    ("dagster", "api", "execute_run"),
    ("dagster", "api", "grpc"),
)
# The tolerations the API server adds to every pod (DefaultTolerationSeconds), without their
# seconds: the only ones not from the platform's catalog.
DEFAULT_TOLERATIONS = tuple(
    {"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute"}
    for taint in ("not-ready", "unreachable")
)
# The one container of a step or run worker pod (dagster-k8s names it so); a code server's is
# named after its location (the Dagster chart's user deployments).
STEP_CONTAINER = "dagster"
# Dagster's storage password: the one key of a platform Secret a pod reads (DAGSTER_PG_PASSWORD;
# docs/kubernetes.md says why a step needs it).
PG_PASSWORD_KEY = "postgresql-password"


def label_value(value: str) -> str:
    """A valid label value (at most 63 characters of [A-Za-z0-9._-]); long ones keep a hash."""
    value = re.sub(r"[^A-Za-z0-9._-]", "_", value).strip("._-")
    if len(value) <= 63:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{value[:52].rstrip('._-')}-{digest}"


def resources_block(
    requested: ComputeResources, gpu_resource: str = "nvidia.com/gpu"
) -> dict[str, dict[str, str]]:
    amounts = {"cpu": quantity(requested.cpu), "memory": quantity(requested.memory_gib, "Gi")}
    if requested.gpu:
        amounts[gpu_resource] = str(requested.gpu)
    # Limits equal requests: the step is billed on what it reserves and cannot take more.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def toleration(entry: Toleration) -> dict[str, str]:
    return entry.model_dump(exclude_none=True)


def step_k8s_config(tenant: TenantSpec, requested: ComputeResources, asset: str) -> dict[str, Any]:
    """The `dagster-k8s/config` of one step of `tenant` materializing `asset`."""
    granted = effective_resources(tenant.name, requested)
    accelerator, pool = placement(granted)
    pod_spec: dict[str, Any] = {
        # Steps talk to no Kubernetes API; only the run worker needs a token.
        "automount_service_account_token": False,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": RUN_AS_USER,
            "run_as_group": RUN_AS_USER,
            "fs_group": RUN_AS_USER,
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        # The root filesystem is read-only; steps write temporary files here.
        "volumes": [{"name": "tmp", "empty_dir": {}}],
    }
    # Pool first: the accelerator class decides where its GPUs are.
    entries = [e for e in (pool, accelerator) if e is not None]
    selector = {k: v for e in entries for k, v in e.node_selector.items()}
    if selector:
        pod_spec["node_selector"] = selector
    tolerations = [toleration(t) for e in entries for t in e.tolerations]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if pool is not None and pool.priority_class:
        pod_spec["priority_class_name"] = pool.priority_class
    gpu_resource = accelerator.resource if accelerator else "nvidia.com/gpu"
    container: dict[str, Any] = {
        "resources": resources_block(granted, gpu_resource),
        "security_context": {
            "allow_privilege_escalation": False,
            "privileged": False,
            "read_only_root_filesystem": True,
            "run_as_non_root": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    labels = {
        "mlplat/tenant": label_value(tenant.name),
        "mlplat/asset": label_value(asset),
        "mlplat/code-location": label_value(location_of(tenant.name)),
    }
    return {
        "container_config": container,
        "pod_spec_config": pod_spec,
        "pod_template_spec_metadata": {"labels": labels},
        "job_metadata": {"labels": labels},
    }


def k8s_placement(tenant: TenantSpec, granted: ComputeResources, path: list[str]) -> dict[str, str]:
    """The `k8s` deployment's placement of a tenant step (`tenancy.assets.Placement`): the pod
    dagster-k8s merges into the Job it submits."""
    asset = "/".join([tenant.name, *path])
    return {"dagster-k8s/config": json.dumps(step_k8s_config(tenant, granted, asset))}


def pod_allowances(tenant: str) -> dict[str, Any]:
    """What the pod policies allow `tenant`'s pods beyond the template (their `parameters`):
    its own Secrets, the scheduling of the catalog entries limits.yaml allows it, its caps per
    step pod (with GPUs only of its allowed accelerator classes) and its pods' container names."""
    accelerators, pools = allowed_placements(tenant)
    limits = limits_for(tenant)
    entries = [*pools, *accelerators]
    labels: dict[str, list[str]] = {}
    for entry in entries:
        for key, value in entry.node_selector.items():
            labels.setdefault(key, []).append(value)
    extended = sorted({a.resource for a in accelerators}) if limits.gpu_allowed else []
    caps = {"cpu": quantity(limits.caps.cpu), "memory": quantity(limits.caps.memory_gib, "Gi")}
    caps.update({resource: str(limits.caps.gpu) for resource in extended})
    return {
        "env_from": [services_secret(tenant)],
        "secret_keys": {platform().postgres.password_secret: [PG_PASSWORD_KEY]},
        "tolerations": [toleration(t) for e in entries for t in e.tolerations],
        "node_labels": labels,
        "priority_classes": sorted({p.priority_class for p in pools if p.priority_class}),
        "caps": caps,
        "extended_resources": extended,
        "containers": [STEP_CONTAINER, k8s_name(location_of(tenant))],
    }
