"""The contract test's job: tenant ridehail's pipeline on dagster-k8s's real `k8s_job_executor`,
whose Kubernetes batch API is a stand-in that runs each submitted Job's container (its command,
args and environment, exactly as the manifest gives them) as a local process and reports the
Job's status from the exit code.

Loaded by file path (by the test and by every step process), so it imports only the platform.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import Field
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster_k8s import k8s_job_executor
from dagster_k8s.client import DagsterKubernetesClient

TENANT = "ridehail"
STANDIN = "mlplat_contract_cluster"  # executor config: the stand-in cluster's state (JSON file)


class ContainerConfigError(RuntimeError):
    """What the kubelet reports when a pod refers to a ConfigMap, Secret or key that is not
    there (CreateContainerConfigError): the Job never starts."""


class LocalProcessBatchApi:
    """Where `kubernetes.client.BatchV1Api` would be. `cluster` is the stand-in's state:
    namespace -> {"configmaps": {name: data}, "secrets": {name: data}}; `jobs.jsonl` in
    `workdir` gets every submitted manifest."""

    def __init__(self, cluster_file: Path):
        state = json.loads(cluster_file.read_text())
        self.cluster: dict[str, Any] = state["namespaces"]
        self.workdir = Path(state["workdir"])
        self.app_dir = state["app_dir"]  # the image's WORKDIR
        self.processes: dict[tuple[str, str], subprocess.Popen | None] = {}

    def _lookup(self, namespace: str, kind: str, name: str) -> dict[str, str]:
        objects = self.cluster.get(namespace, {}).get(kind, {})
        if name not in objects:
            raise ContainerConfigError(f"{kind[:-1]} {name!r} not found in namespace {namespace}")
        return objects[name]

    def _environment(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        # What the image itself provides (Dockerfile ENV) and the runtime sets; nothing else
        # from this process leaks into the container.
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
            "HOME": str(self.workdir / "home"),
        }
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(self._lookup(namespace, "configmaps", source["configMapRef"]["name"]))
            if "secretRef" in source:
                env.update(self._lookup(namespace, "secrets", source["secretRef"]["name"]))
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            ref = var.get("valueFrom", {})
            kind, key_ref = (
                ("secrets", ref["secretKeyRef"])
                if "secretKeyRef" in ref
                else ("configmaps", ref["configMapKeyRef"])
            )
            data = self._lookup(namespace, kind, key_ref["name"])
            if key_ref["key"] not in data:
                raise ContainerConfigError(f"key {key_ref['key']!r} not in {key_ref['name']}")
            env[var["name"]] = data[key_ref["key"]]
        return env

    def create_namespaced_job(self, namespace: str, body, **_: Any):
        from kubernetes.client import ApiClient

        manifest = ApiClient().sanitize_for_serialization(body)
        manifest["metadata"]["namespace"] = namespace
        name = manifest["metadata"]["name"]
        with (self.workdir / "jobs.jsonl").open("a") as log:
            log.write(json.dumps(manifest) + "\n")
        [container] = manifest["spec"]["template"]["spec"]["containers"]
        try:
            env = self._environment(namespace, container)
        except ContainerConfigError as exc:
            (self.workdir / f"{name}.log").write_text(f"CreateContainerConfigError: {exc}\n")
            self.processes[(namespace, name)] = None
            return body
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        with (self.workdir / f"{name}.log").open("w") as out:
            self.processes[(namespace, name)] = subprocess.Popen(
                command, env=env, cwd=self.app_dir, stdout=out, stderr=subprocess.STDOUT
            )
        return body

    def read_namespaced_job_status(self, name: str, namespace: str, **_: Any):
        from kubernetes.client import V1Job, V1JobStatus
        from kubernetes.client.rest import ApiException

        if (namespace, name) not in self.processes:
            raise ApiException(status=404, reason=f"job {name} not found in {namespace}")
        process = self.processes[(namespace, name)]
        code = 1 if process is None else process.poll()
        if code is None:
            return V1Job(status=V1JobStatus(active=1))
        return V1Job(status=V1JobStatus(succeeded=1) if code == 0 else V1JobStatus(failed=1))

    def delete_namespaced_job(self, name: str, namespace: str, **_: Any):
        process = self.processes.get((namespace, name))
        if process is not None and process.poll() is None:
            process.kill()
        return None


@dg.executor(
    name="k8s_contract",
    config_schema={
        **k8s_job_executor.config_schema.config_type.fields,
        STANDIN: Field(str),
    },
    requirements=multiple_process_executor_requirements(),
)
def contract_executor(init_context: dg.InitExecutorContext):
    """dagster-k8s's own executor, built by its own function from the same config; only its
    step handler's client gets the stand-in batch API."""
    executor = k8s_job_executor.executor_creation_fn(init_context)
    batch = LocalProcessBatchApi(Path(init_context.executor_config[STANDIN]))
    executor._step_handler._api_client = DagsterKubernetesClient.production_client(
        batch_api_override=batch
    )
    return executor


def ridehail_pipeline() -> dg.JobDefinition:
    """Tenant ridehail's pipeline as the platform builds it, on the contract executor with the
    tenant's k8s executor config (namespace, service account, labels)."""
    from platform_assets.composition.executors import executor_for
    from platform_assets.composition.locations import tenant_definitions
    from platform_assets.env import deployment
    from platform_assets.k8s.config import platform
    from platform_assets.resources.deployment import resources_for
    from platform_assets.tenancy.catalog import load_all
    from platform_assets.tenancy.runs import pipeline_selection

    catalog = load_all()[TENANT]
    k8s = executor_for("k8s", catalog.tenant).config_schema.resolve_config({}).value["config"]
    # Set in the orchestrating test process only; a step process loads this job to run one
    # step and never builds its executor.
    cluster_file = os.environ.get("MLPLAT_CONTRACT_CLUSTER", "")
    # On a cluster the image comes with the code location's origin; here with the executor.
    config = {**k8s, "job_image": platform().image.ref, STANDIN: cluster_file}
    executor = contract_executor.configured(config, name="k8s")
    # A model trained by the team's code runs its trainer as a pod, which exchanges files
    # through an s3:// lake; this test's lake is a folder. That path has its own test
    # (test_trainer_pod.py: a stand-in API whose pods run, against S3 on loopback).
    trained_by_code = dg.AssetSelection.assets(
        *(
            dg.AssetKey([TENANT, "models", name])
            for name, spec in catalog.models.items()
            if spec.trainer is not None
        )
    ).downstream()
    job = dg.define_asset_job(
        f"{TENANT}_pipeline",
        selection=pipeline_selection(TENANT) - trained_by_code,
        executor_def=executor,
        tags={"tenant": TENANT},
    )
    defs = dg.Definitions.merge(
        tenant_definitions(catalog, "k8s"),
        # MLPLAT_ENV=k8s: every service setting comes from the environment, which in a step
        # process is only what its Job manifest carries.
        dg.Definitions(jobs=[job], resources=resources_for(deployment())),
    )
    return defs.resolve_job_def(f"{TENANT}_pipeline")
