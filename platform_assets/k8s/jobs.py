"""The exact Jobs Dagster submits on Kubernetes, captured from dagster-k8s itself.

For every step of every tenant pipeline, dagster-k8s's own `k8s_job_executor` (its
`K8sStepHandler`, built by the executor from the job's executor config) and `K8sRunLauncher`
build the Job; a recording batch API takes it where the cluster would. The run carries the
origin a deployed code location reports (its module, attribute, image and the container
context the user-deployments chart passes with `includeConfigInLaunchedRuns`), so namespace,
service account, env and labels come through the same merges as on a cluster.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.k8s.config import k8s_name, platform
from platform_assets.k8s.values import (
    DAGSTER_HOME,
    GRPC_PORT,
    RELEASE,
    placement,
    run_launcher_config,
    user_deployment,
)
from platform_assets.tenancy.locations import CodeLocation
from platform_assets.tenancy.specs import TenantSpec

APP_DIR = "/app"  # where the Dockerfile puts the platform; its venv is /app/.venv


class RecordingBatchApi:
    """Stands where `kubernetes.client.BatchV1Api` would: keeps each Job it is asked to create,
    as the API server would store it (serialized, with the namespace it was created in)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def create_namespaced_job(self, namespace: str, body, **_: Any):
        from kubernetes.client import ApiClient

        manifest = ApiClient().sanitize_for_serialization(body)
        manifest["metadata"]["namespace"] = namespace
        self.jobs.append(manifest)
        return body


@dataclass(frozen=True)
class CapturedJob:
    tenant: str
    job: str
    step: str  # step key, or "run" for the run worker
    manifest: dict[str, Any]


def container_context(location: CodeLocation, tenants: dict[str, TenantSpec]) -> dict:
    """What the user-deployments chart sets as DAGSTER_CONTAINER_CONTEXT for the location's
    server (its `k8sContainerContext` helper), from the same values we give it."""
    deployment = user_deployment(location, tenants)
    namespace, account, _ = placement(location, tenants)
    return {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [f"{RELEASE}-{deployment['name']}-user-env"],
            "env_secrets": [s["name"] for s in deployment["envSecrets"]],
            "volume_mounts": deployment["volumeMounts"],
            "volumes": deployment["volumes"],
            "labels": deployment["labels"],
            "resources": deployment["resources"],
            "namespace": namespace,
            "service_account_name": account,
            "env": deployment["env"],
            "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
        }
    }


def location_origin(location: CodeLocation, tenants: dict[str, TenantSpec], job_name: str):
    """(job code origin, remote job origin) as the location's gRPC server reports them."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    namespace, _, _ = placement(location, tenants)
    repository = RepositoryPythonOrigin(
        executable_path=f"{APP_DIR}/.venv/bin/python",
        code_pointer=ModuleCodePointer(location.module, location.attribute, APP_DIR),
        container_image=platform().image.ref,
        entry_point=["dagster"],
        container_context=container_context(location, tenants),
    )
    code_location = GrpcServerCodeLocationOrigin(
        host=f"{k8s_name(location.name)}.{namespace}", port=GRPC_PORT, location_name=location.name
    )
    remote = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(code_location, "__repository__"),
        job_name=job_name,
    )
    return JobPythonOrigin(job_name, repository), remote


def launcher_instance_config(kubeconfig: Path) -> dict[str, Any]:
    """The instance's `run_launcher` as the Dagster chart renders it into `dagster.yaml`, except
    that it reads a kubeconfig instead of the in-cluster one (nothing here calls the API)."""
    values = run_launcher_config()
    return {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "load_incluster_config": False,
            "kubeconfig_file": str(kubeconfig),
            "job_namespace": values["jobNamespace"],
            "image_pull_policy": values["imagePullPolicy"],
            "service_account_name": platform().dagster_service_account,
            "dagster_home": DAGSTER_HOME,
            "instance_config_map": f"{RELEASE}-instance",
            "postgres_password_secret": platform().postgres.password_secret,
            "env_config_maps": [f"{RELEASE}-pipeline-env"],
            "env_vars": values["envVars"],
            "fail_pod_on_run_failure": values["failPodOnRunFailure"],
            "resources": values["resources"],
            "security_context": values["securityContext"],
            "run_k8s_config": {
                "pod_spec_config": values["runK8sConfig"]["podSpecConfig"],
                "pod_template_spec_metadata": values["runK8sConfig"]["podTemplateSpecMetadata"],
            },
        },
    }


# dagster-k8s loads a kubeconfig when it builds its clients; this one names an address nothing
# listens on, so a call that should have gone to the recorder fails loudly instead.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _step_jobs(instance, job: dg.JobDefinition, run, recorder: RecordingBatchApi) -> list:
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.plan.state import KnownExecutionState
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating import StepHandlerContext
    from dagster._core.log_manager import DagsterLogManager
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s.client import DagsterKubernetesClient

    plan = create_execution_plan(job)
    # The executor config exactly as a run resolves it (defaults filled in).
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    executor = job.executor_def.executor_creation_fn(
        InitExecutorContext(
            job=InMemoryJob(job),
            executor_def=job.executor_def,
            executor_config=config,
            instance=instance,
        )
    )
    handler = executor._step_handler  # the K8sStepHandler the executor built from its config
    # Its client's batch API is the only thing replaced: the cluster's side of the call.
    handler._api_client = DagsterKubernetesClient.production_client(batch_api_override=recorder)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(
            job=InMemoryJob(job),
            dagster_run=run,
            instance=instance,
            execution_plan=plan,
            raise_on_error=True,
            retry_mode=RetryMode.DISABLED,
        ),
        # Events go to the capturing instance only, not to the console.
        log_manager=DagsterLogManager.create(loggers=[], instance=instance, dagster_run=run),
        executor=executor,
        output_capture=None,
    )
    steps = []
    for step in plan.get_steps_to_execute_in_topo_order():
        args = ExecuteStepArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            step_keys_to_execute=[step.key],
            instance_ref=instance.get_ref(),
            retry_mode=executor.retries.for_inner_plan(),
            known_state=KnownExecutionState(),
            should_verify_step=True,
            print_serialized_events=False,
        )
        context = StepHandlerContext(instance, plan_context, [step], args, run)
        list(handler.launch_step(context))
        steps.append(step.key)
    return steps


def capture_jobs(
    jobs: dict[str, tuple[dg.JobDefinition, CodeLocation]], tenants: dict[str, TenantSpec]
) -> list[CapturedJob]:
    """The run worker Job and every step's Job of each `jobs` entry (job name -> job and the
    code location it is deployed in)."""
    from dagster._core.launcher import LaunchRunContext
    from dagster_k8s import K8sRunLauncher

    captured: list[CapturedJob] = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        launcher_cfg = launcher_instance_config(kubeconfig)
        overrides = {"run_launcher": launcher_cfg, "telemetry": {"enabled": False}}
        with dg.DagsterInstance.local_temp(tmp, overrides=overrides) as instance:
            for name, (job, location) in sorted(jobs.items()):
                tenant = location.tenants[0] if location.tenants else location.name
                recorder = RecordingBatchApi()
                code_origin, remote_origin = location_origin(location, tenants, name)
                run = instance.create_run_for_job(
                    job,
                    tags=dict(job.tags),
                    job_code_origin=code_origin,
                    remote_job_origin=remote_origin,
                )
                launcher = K8sRunLauncher(**launcher_cfg["config"], k8s_client_batch_api=recorder)
                launcher.register_instance(instance)
                launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
                steps = ["run", *_step_jobs(instance, job, run, recorder)]
                captured += [
                    CapturedJob(tenant, name, step, manifest)
                    for step, manifest in zip(steps, recorder.jobs, strict=True)
                ]
    return captured
