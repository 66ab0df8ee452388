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
import math
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
# A team's trainer pod (models/trainers/pod.py): the label the platform marks it with (policies
# and NetworkPolicies select on it), its one container, the exact command the trainer image runs
# (deploy/trainer/Dockerfile: the platform's runner, no platform package inside) and the only env
# it has, the Dagster Pipes bootstrap PipesK8sClient sets.
ROLE_LABEL = "mlplat/role"
TRAINER_ROLE = "trainer"
TRAINER_CONTAINER = "trainer"
TRAINER_COMMAND = ("python", "/opt/mlplat/runner.py")
TRAINER_ENV = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")
# The label of a step pod that launches a trainer pod: the one kind of step that mounts its
# service account's token (PipesK8sClient creates, watches and deletes the pod).
LAUNCHES_LABEL = "mlplat/launches"
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


def pod_security_context() -> dict[str, Any]:
    """The restricted pod security context of every pod the platform renders."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def step_k8s_config(
    tenant: TenantSpec, requested: ComputeResources, asset: str, *, launches_trainer: bool = False
) -> dict[str, Any]:
    """The `dagster-k8s/config` of one step of `tenant` materializing `asset`. A step that
    `launches_trainer` (a model with `trainer:`) mounts its token: PipesK8sClient, in the step,
    creates the trainer pod; every other step talks to no Kubernetes API."""
    granted = effective_resources(tenant.name, requested)
    accelerator, pool = placement(granted)
    pod_spec: dict[str, Any] = {
        "automount_service_account_token": launches_trainer,
        "security_context": pod_security_context(),
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
        "security_context": container_security_context(),
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    labels = {
        "mlplat/tenant": label_value(tenant.name),
        "mlplat/asset": label_value(asset),
        "mlplat/code-location": label_value(location_of(tenant.name)),
    }
    if launches_trainer:
        labels[LAUNCHES_LABEL] = TRAINER_ROLE
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


def k8s_trainer_placement(
    tenant: TenantSpec, granted: ComputeResources, path: list[str]
) -> dict[str, str]:
    """`k8s_placement` of a model step whose model has `trainer:`: its pod launches the trainer
    pod, so it mounts its service account's token (and is labelled so the policies allow it)."""
    asset = "/".join([tenant.name, *path])
    config = step_k8s_config(tenant, granted, asset, launches_trainer=True)
    return {"dagster-k8s/config": json.dumps(config)}


def trainer_service_account(tenant: str) -> str:
    """The account a tenant's trainer pods run as: bound to no role, mounting no token."""
    return f"{k8s_name(tenant)}-trainer"


def trainer_repository(tenant: str) -> str:
    """Where the tenant's trainer images are: beside the platform's image, one repository per
    tenant (deploy/trainer/Dockerfile builds them), tagged by the environment key."""
    registry = platform().image.repository.rpartition("/")[0]
    return f"{registry}/mlplat-trainer-{k8s_name(tenant)}"


def trainer_pod(
    tenant: str,
    asset: str,
    *,
    env_key: str,
    cpu: float,
    memory_gib: float,
    tmp_mib: float,
    timeout_s: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod a team's training code runs in, as PipesK8sClient's `base_pod_meta` and
    `base_pod_spec`: the tenant's trainer image running the platform's runner as the tenant's
    trainer account (no role, no token), no Secret and no env but the Pipes bootstrap
    PipesK8sClient adds, the step's restricted security context, CPU and memory of the model
    step's grant, a deadline and one size-limited scratch volume for /tmp (the split and the
    model file pass through it). Nothing from the tenant's YAML but numbers the platform capped."""
    scratch = quantity(tmp_mib / 1024, "Gi")
    amounts = {
        "cpu": quantity(cpu),
        "memory": quantity(memory_gib, "Gi"),
        "ephemeral-storage": scratch,
    }
    labels = {
        "mlplat/tenant": label_value(tenant),
        "mlplat/asset": label_value(asset),
        "mlplat/code-location": label_value(location_of(tenant)),
        ROLE_LABEL: TRAINER_ROLE,
    }
    container = {
        "name": TRAINER_CONTAINER,
        "image": f"{trainer_repository(tenant)}:{env_key}",
        "command": list(TRAINER_COMMAND),
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "security_context": container_security_context(),
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    spec = {
        "service_account_name": trainer_service_account(tenant),
        "automount_service_account_token": False,
        "enable_service_links": False,
        "restart_policy": "Never",
        "active_deadline_seconds": max(1, math.ceil(timeout_s)),
        "security_context": pod_security_context(),
        "volumes": [{"name": "tmp", "empty_dir": {"size_limit": scratch}}],
        "containers": [container],
    }
    return {"labels": labels}, spec


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
        # Its trainer pods: their account and image repository, and what one may take.
        "trainer_service_account": trainer_service_account(tenant),
        "trainer_image": f"{trainer_repository(tenant)}:",
        "trainer_caps": {
            **{k: v for k, v in caps.items() if k in ("cpu", "memory")},
            "ephemeral-storage": quantity(limits.trainer.tmp_mib / 1024, "Gi"),
        },
    }
