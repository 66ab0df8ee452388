"""The model step's side of a team trainer: the job from the model's YAML and the platform's
limits, the backend this deployment runs it on, and the acceptance of what comes back.

A trainer that fails, in any way, fails the step with a `dg.Failure` naming the model's file
and the trainer, and is not retried: running the same code on the same split again gives the
same failure (the step's retry policy is for the tracking server's outages).
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.cost.metering import Usage
from platform_assets.env import deployment
from platform_assets.models.artifacts import ArtifactRefused
from platform_assets.models.flavors import accept_trained
from platform_assets.models.trainers.job import TrainerFailed, TrainerJob, TrainerOutput
from platform_assets.models.trainers.pod import run_in_pod
from platform_assets.models.trainers.sandbox import run_in_sandbox
from platform_assets.resources.lake import LakeResource
from platform_assets.tenancy.catalog import TEAM_CODE, TenantCatalog
from platform_assets.tenancy.limits import grant, trainer_limits
from platform_assets.tenancy.specs import ComputeResources, ModelSpec

if TYPE_CHECKING:
    import pandas as pd

MIB = 1 << 20


def trainer_job(
    catalog: TenantCatalog, spec: ModelSpec, requested: ComputeResources, features: tuple[str, ...]
) -> TrainerJob:
    """What the trainer of `spec` runs with: the step's granted CPU and memory (what it is
    billed for) and limits.yaml's `trainer` limits of its tenant."""
    assert spec.trainer is not None
    tenant = catalog.tenant.name
    granted, _ = grant(tenant, requested)
    limits = trainer_limits(tenant)
    return TrainerJob(
        tenant=tenant,
        model=spec.name,
        source=catalog.file_of("model", spec.name),
        code_dir=catalog.folder / TEAM_CODE,
        entrypoint=spec.trainer.entrypoint,
        flavor=spec.trainer.flavor,
        params=dict(spec.trainer.params),
        label=spec.labels.label_column,
        features=features,
        cpu=granted.cpu,
        memory_gib=granted.memory_gib,
        timeout_s=limits.timeout_s,
        artifact_bytes=int(limits.artifact_mib * MIB),
        tmp_bytes=int(limits.tmp_mib * MIB),
    )


def failure(job: TrainerJob, message: str) -> dg.Failure:
    """The step's failure, naming the model's file and the trainer (the backends' own messages
    already start with them)."""
    if not message.startswith(job.where):
        message = f"{job.where} ({job.flavor}): {message}"
    return dg.Failure(description=message, allow_retries=False)


def run_trainer(
    context: dg.AssetExecutionContext,
    job: TrainerJob,
    train: pd.DataFrame,
    usage: Usage,
    lake: LakeResource,
    namespace: str,
) -> TrainerOutput:
    """Run the team's code on the training split (features and label only) where this
    deployment runs team code: a pod of the tenant's trainer image on Kubernetes, a bubblewrap
    sandbox elsewhere. Never in this process, and never unsandboxed. A pod gets its split and
    returns its model through `lake` (an `s3://` lake), in the tenant's `namespace`.

    The sandbox runs within the step's own grant and is measured with it (its CPU is the
    step's children's). A trainer pod is a second reservation while the step waits for it: it
    is added to the step's `usage` for as long as it ran, failed or not."""
    try:
        if deployment() == "k8s":
            started = time.perf_counter()
            try:
                return run_in_pod(context, job, train, lake=lake, namespace=namespace)
            finally:
                pod = ComputeResources(cpu=job.cpu, memory_gib=job.memory_gib)
                usage.reserve(pod, time.perf_counter() - started)
        return run_in_sandbox(context, job, train)
    except TrainerFailed as exc:
        raise failure(job, str(exc)) from exc


def accept(output: TrainerOutput, job: TrainerJob, X: pd.DataFrame) -> Any:
    """The returned model, loaded here from its safe format and checked (`accept_trained`);
    the backend's private folder holding the file is removed either way."""
    try:
        return accept_trained(output.artifact, job.features, X, "the returned model")
    except ArtifactRefused as exc:
        raise failure(job, str(exc)) from exc
    finally:
        shutil.rmtree(output.artifact.parent, ignore_errors=True)


# Reported values shown per model materialization; more are cut, and say so.
REPORTED_SHOWN = 50


def trainer_metadata(output: TrainerOutput) -> dict[str, dg.RawMetadataValue]:
    """What the sandbox used, and what the team's code reported about itself: shown in the UI
    under `team_reported`, never read by evaluation or promotion."""
    reported = dict(list(output.reported.items())[:REPORTED_SHOWN])
    return {
        "trainer/wall_seconds": round(output.wall_s, 3),
        "trainer/cpu_seconds": round(output.cpu_s, 3),
        "trainer/max_rss_mib": round(output.max_rss_bytes / MIB, 1),
        "team_reported": dg.MetadataValue.json(reported),
    }
