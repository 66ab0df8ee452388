"""What a tenant's step pod carries on the `k8s` deployment, as the `dagster-k8s/config` op tag
dagster-k8s merges into the Job it submits: requests and limits after the platform's caps, GPUs
with their toleration, a restricted security context, cost-attribution labels and the tenant's
own overrides.

The namespace and service account are not here: dagster-k8s takes both from the executor (and
the code location), so they always travel together.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from platform_assets.k8s.config import platform, quantity
from platform_assets.tenancy.limits import effective_resources
from platform_assets.tenancy.locations import location_of
from platform_assets.tenancy.specs import ComputeResources, TenantSpec

# The non-root user the image runs as (Dockerfile).
RUN_AS_USER = 10001


def label_value(value: str) -> str:
    """A valid label value (at most 63 characters of [A-Za-z0-9._-]); long ones keep a hash."""
    value = re.sub(r"[^A-Za-z0-9._-]", "_", value).strip("._-")
    if len(value) <= 63:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{value[:52].rstrip('._-')}-{digest}"


def resources_block(requested: ComputeResources) -> dict[str, dict[str, str]]:
    amounts = {"cpu": quantity(requested.cpu), "memory": quantity(requested.memory_gib, "Gi")}
    if requested.gpu:
        amounts["nvidia.com/gpu"] = str(requested.gpu)
    # Limits equal requests: the step is billed on what it reserves and cannot take more.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def step_k8s_config(tenant: TenantSpec, requested: ComputeResources, asset: str) -> dict[str, Any]:
    """The `dagster-k8s/config` of one step of `tenant` materializing `asset`."""
    capped = effective_resources(tenant.name, requested)
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
    if capped.gpu:
        pod_spec["tolerations"] = [dict(platform().gpu_toleration)]
    container: dict[str, Any] = {
        "resources": resources_block(capped),
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
        "container_config": deep_merge(container, tenant.k8s.container_config),
        "pod_spec_config": deep_merge(pod_spec, tenant.k8s.pod_spec_config),
        "pod_template_spec_metadata": {"labels": labels},
        "job_metadata": {"labels": labels},
    }


def k8s_placement(tenant: TenantSpec, granted: ComputeResources, path: list[str]) -> dict[str, str]:
    """The `k8s` deployment's placement of a tenant step (`tenancy.assets.Placement`): the pod
    dagster-k8s merges into the Job it submits."""
    asset = "/".join([tenant.name, *path])
    return {"dagster-k8s/config": json.dumps(step_k8s_config(tenant, granted, asset))}
