"""`mlplat k8s render`: everything a cluster needs, written under one folder and checked.

    DIR/helm/dagster.values.yaml                 the Dagster chart's values
    DIR/helm/user-deployments/<location>.yaml    each location's user-deployments values
    DIR/platform/*.yaml, DIR/tenants/<t>/*.yaml  our chart (deploy/helm/mlplat-tenant) rendered
                                                 by `helm template`, per namespace, with the
                                                 ConfigMaps of the tenant folders there
    DIR/jobs/<t>/<job>/<step>.yaml               the Jobs dagster-k8s submits (run.yaml: the
                                                 run worker)

Every manifest is checked against the Kubernetes schemas and what they miss, every workload
against the pod policies, every values file against the Dagster chart's schema where the user
has the chart (`schemas.dagster_chart_schemas`; without it that check is skipped, saying so).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from platform_assets.env import repo_root
from platform_assets.k8s.config import (
    PLATFORM_RUNNER,
    SERVICE_KEYS,
    k8s_name,
    platform,
    quantity,
    services_secret,
)
from platform_assets.k8s.defs_configmaps import CHECKSUM_ANNOTATION, location_configmaps
from platform_assets.k8s.helm import helm_binary
from platform_assets.k8s.jobs import capture_jobs
from platform_assets.k8s.policy import PolicySet, Violation
from platform_assets.k8s.schemas import ChartSchemas, check_chart_values, check_manifest
from platform_assets.k8s.steps import (
    DEFAULT_TOLERATIONS,
    ENTRYPOINTS,
    ROLE_LABEL,
    TRAINER_COMMAND,
    TRAINER_CONTAINER,
    TRAINER_ENV,
    TRAINER_ROLE,
    pod_allowances,
    resources_block,
    trainer_service_account,
)
from platform_assets.k8s.values import (
    CODE_SERVER,
    DAGSTER_HOME,
    GRPC_PORT,
    RELEASE,
    dagster_values,
    user_deployments_values,
)
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.isolation import PLATFORM
from platform_assets.tenancy.limits import allowed_placements, effective_resources, limits_for
from platform_assets.tenancy.locations import CodeLocation, code_locations, location_named
from platform_assets.tenancy.specs import TenantSpec

CHART = repo_root() / "deploy" / "helm" / "mlplat-tenant"
# The kinds policies/lib/k8s.rego finds a pod spec in. InferenceServices are not rendered here:
# governance/deploy.py renders one on each champion change and runs the same pod policies.
POD_KINDS = (
    "Pod",
    "Job",
    "CronJob",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "InferenceService",
)


def tenant_chart_values(name: str, spec: TenantSpec | None) -> dict[str, Any]:
    """Values of our tenant chart for one location: a tenant's, or the platform's (`spec`
    None: no quota or NetworkPolicy, the platform namespace hosts Dagster itself)."""
    plat = platform()
    tenant = spec.name if spec else PLATFORM
    namespace = spec.namespace if spec else plat.namespace
    account = spec.runner_service_account if spec else PLATFORM_RUNNER
    secrets = [{"name": plat.postgres.password_secret, "keys": ["postgresql-password"]}]
    secrets.append({"name": services_secret(tenant), "keys": list(SERVICE_KEYS)})
    values: dict[str, Any] = {
        "tenant": tenant,
        "name": k8s_name(tenant),
        "namespace": namespace,
        "codeLocation": name,
        "serviceAccount": account,
        "servingServiceAccount": spec.serving_service_account if spec else "",
        # A team's trainer pods (models/trainers/pod.py): their account, bound to no role, and
        # the label the NetworkPolicies tell them apart by. The platform's location has none.
        "trainer": {
            "serviceAccount": trainer_service_account(tenant) if spec else "",
            "roleLabel": {ROLE_LABEL: TRAINER_ROLE},
            "egress": None,
            "dns": False,
        },
        "launcher": {"name": plat.dagster_service_account, "namespace": plat.namespace},
        "dagsterRelease": RELEASE,
        "pipelineEnv": {
            "DAGSTER_HOME": DAGSTER_HOME,
            "DAGSTER_K8S_PG_PASSWORD_SECRET": plat.postgres.password_secret,
            "DAGSTER_K8S_INSTANCE_CONFIG_MAP": f"{RELEASE}-instance",
            "DAGSTER_K8S_PIPELINE_RUN_NAMESPACE": namespace,
            "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": f"{RELEASE}-pipeline-env",
        },
        "secrets": secrets,
        "definitions": [m.chart_values() for m in location_configmaps(location_named(name))],
        "definitionsChecksumAnnotation": CHECKSUM_ANNOTATION,
        "quota": {"enabled": False, "hard": {}},
        "limitRange": {"enabled": False, "max": {}, "default": {}, "defaultRequest": {}},
        "networkPolicy": {
            "enabled": False,
            "dns": {"namespace": "kube-system", "podLabels": {"k8s-app": "kube-dns"}},
            "egressCidrs": [],
            "egressPods": [],
            "grpcPort": GRPC_PORT,
        },
    }
    if spec is None:
        return values
    limits = limits_for(spec.name)
    caps, worker, runs = limits.caps, plat.run_worker, limits.max_concurrent_runs
    steps = plat.steps_per_run
    # Steps of every concurrent run at their largest, each with the trainer pod a model step
    # may launch (at most the step's own grant), a run worker each, and the code server.
    cpu = runs * (2 * steps * caps.cpu + worker.cpu) + CODE_SERVER.cpu
    memory = runs * (2 * steps * caps.memory_gib + worker.memory_gib) + CODE_SERVER.memory_gib
    gpus = runs * steps * caps.gpu if limits.gpu_allowed else 0
    hard = {
        "requests.cpu": quantity(cpu),
        "limits.cpu": quantity(cpu),
        "requests.memory": quantity(memory, "Gi"),
        "limits.memory": quantity(memory, "Gi"),
        "pods": str(runs * (2 * steps + 1) + 1),
    }
    # GPUs only as the resources of the accelerator classes it may use (nvidia's 0 otherwise).
    allowed = {a.resource for a in allowed_placements(spec.name)[0]}
    for resource in sorted({"nvidia.com/gpu", *allowed}):
        hard[f"requests.{resource}"] = str(gpus if resource in allowed else 0)
    largest = {
        "cpu": quantity(max(caps.cpu, worker.cpu, CODE_SERVER.cpu)),
        "memory": quantity(max(caps.memory_gib, worker.memory_gib, CODE_SERVER.memory_gib), "Gi"),
    }
    default = resources_block(effective_resources(spec.name, spec.resources))["requests"]
    default.pop("nvidia.com/gpu", None)
    values["quota"] = {"enabled": True, "hard": hard}
    values["limitRange"] = {
        "enabled": True,
        "max": largest,
        "default": default,
        "defaultRequest": default,
    }
    egress = plat.egress
    store = egress[plat.trainer.egress]
    values["trainer"].update(
        egress={"name": plat.trainer.egress, "cidr": store.cidr, "port": store.port},
        dns=plat.trainer.dns,
    )
    values["networkPolicy"].update(
        enabled=True,
        egressCidrs=[
            {"name": name, "cidr": rule.cidr, "port": rule.port} for name, rule in egress.items()
        ],
        egressPods=[
            {
                "name": "mlflow",
                "namespace": plat.mlflow.namespace,
                "podLabels": plat.mlflow.pod_labels,
                "port": plat.mlflow.port,
            }
        ],
    )
    return values


def helm_template(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Our chart rendered by `helm template` with these values: its manifests, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(yaml.safe_dump(values, sort_keys=False))
        release = f"tenant-{values['name']}"[:53].rstrip("-")
        out = subprocess.run(
            [
                helm_binary(),
                "template",
                release,
                str(CHART),
                "--namespace",
                values["namespace"],
                "--values",
                str(values_file),
            ],
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise RuntimeError(f"helm template {CHART} failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def manifest_file(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"


def pod_parameters(tenants: dict[str, TenantSpec]) -> dict[str, Any]:
    """The pod policies' `parameters` (a Gatekeeper Constraint carries the same)."""
    places = {
        t.name: {
            "namespace": t.namespace,
            "service_account": t.runner_service_account,
            "serving_service_account": t.serving_service_account,
            **pod_allowances(t.name),
        }
        for t in tenants.values()
    }
    worker = platform().run_worker
    places[PLATFORM] = {
        "namespace": platform().namespace,
        "service_account": PLATFORM_RUNNER,
        **pod_allowances(PLATFORM),
    }
    return {
        "tenants": places,
        "registries": platform().allowed_registries,
        "writable_root_containers": [],
        "entrypoints": [list(argv) for argv in ENTRYPOINTS],
        "trainer_entrypoint": list(TRAINER_COMMAND),
        "trainer_env": list(TRAINER_ENV),
        "trainer_container": TRAINER_CONTAINER,
        "default_tolerations": list(DEFAULT_TOLERATIONS),
        # Run workers and code servers: sized by the platform, not by any tenant's caps.
        "platform_pod_caps": {
            "cpu": quantity(max(worker.cpu, CODE_SERVER.cpu)),
            "memory": quantity(max(worker.memory_gib, CODE_SERVER.memory_gib), "Gi"),
        },
    }


@dataclass
class Rendered:
    out: Path
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # checks not run, each saying why

    def write(self, relative: str, document: dict[str, Any]) -> Path:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.files.append(path)
        return path

    @property
    def ok(self) -> bool:
        return not self.problems and not self.violations


def write_values(
    result: Rendered,
    tenants: dict[str, TenantSpec],
    locations: list[CodeLocation],
    schemas: ChartSchemas,
    folder: str = "",
) -> None:
    """The Dagster chart's values and each location's user-deployments values, under `folder`,
    checked against the chart's schemas when the chart was found (else that check is skipped,
    saying so)."""
    documents = [(f"{folder}dagster.values.yaml", "dagster", dagster_values(tenants, locations))]
    documents += [
        (
            f"{folder}user-deployments/{location.name}.yaml",
            "dagster-user-deployments",
            user_deployments_values(location, tenants),
        )
        for location in locations
    ]
    for relative, chart, document in documents:
        where = result.write(relative, document)
        if schemas.found:
            result.problems += check_chart_values(document, chart, str(where), schemas)
    if not schemas.found:
        result.skipped.append(schemas.skipped)


def render_all(
    out: Path,
    catalogs: dict[str, TenantCatalog],
    pipelines: dict[str, tuple[dg.JobDefinition, CodeLocation]],
    schemas: ChartSchemas,
) -> Rendered:
    """Render and check everything into `out` (replaced whole). `pipelines`: each tenant's
    pipeline job as the `k8s` deployment defines it, with its code location; `schemas`: the
    Dagster chart's (the values check is skipped, saying so, when none were found)."""
    tenants = {name: c.tenant for name, c in catalogs.items()}
    if out.exists():
        shutil.rmtree(out)
    result = Rendered(out)
    locations = code_locations()
    write_values(result, tenants, locations, schemas, "helm/")
    manifests: list[tuple[Path, dict[str, Any]]] = []
    for location in locations:
        spec = tenants[location.name] if location.name in tenants else None
        folder = "platform" if spec is None else f"tenants/{location.name}"
        for manifest in helm_template(tenant_chart_values(location.name, spec)):
            manifests.append(
                (result.write(f"{folder}/{manifest_file(manifest)}", manifest), manifest)
            )
    for job in capture_jobs(pipelines, tenants):
        path = result.write(f"jobs/{job.tenant}/{job.job}/{job.step}.yaml", job.manifest)
        manifests.append((path, job.manifest))
    pods = PolicySet("pods")
    parameters = pod_parameters(tenants)
    for path, manifest in manifests:
        result.problems += check_manifest(manifest, str(path))
        review = {"review": {"object": manifest}, "parameters": parameters}
        if manifest["kind"] in POD_KINDS:
            result.violations += pods.evaluate(review, str(path))
    return result
