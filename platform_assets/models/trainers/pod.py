"""A team's training code run on Kubernetes: a pod of the tenant's trainer image, launched and
watched by dagster-k8s's `PipesK8sClient` from the model step (docs/trainers.md, "On
Kubernetes").

The pod is the platform's template (`k8s.steps.trainer_pod`): the tenant's trainer account
(bound to no role, no token), no Secret and no env but the Pipes bootstrap, the step's CPU and
memory, a deadline, a size-limited scratch volume, and a NetworkPolicy that lets it reach the
object store only. It holds no credential: the training split comes from a pre-signed GET URL
and the model goes to a pre-signed POST whose policy caps its size; the platform then checks
the size again and downloads the file into a private folder. The pod's log carries the Pipes
messages, handed to `TeamMessages` (the team's own, never a Dagster event).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.k8s.config import platform
from platform_assets.k8s.steps import label_value, trainer_pod
from platform_assets.models.trainers.environment import project_key
from platform_assets.models.trainers.job import TrainerFailed, TrainerJob, TrainerOutput
from platform_assets.models.trainers.messages import TeamMessages, mark, new_reported
from platform_assets.resources.lake import LakeResource
from platform_assets.tenancy.catalog import code_source_root

if TYPE_CHECKING:  # pandas and pyarrow load in the step, not with the code location
    import pandas as pd
    import pyarrow as pa

# Where the trainer image holds the team's source (deploy/trainer/Dockerfile).
IMAGE_CODE = PurePosixPath("/opt/mlplat/code")
# The runner's refusals (runner.ERROR_PREFIX: the runner imports no platform code).
ERROR_PREFIX = "mlplat-trainer-error: "
# The lake folder (per tenant) the split and the model pass through, removed after each run.
EXCHANGE_KIND = "trainer-exchange"
# How long the pre-signed URLs outlive the pod's deadline: scheduling and the image pull.
URL_SLACK_S = 600
ERROR_TAIL_CHARS = 6000


def environment_key(code_dir: Path) -> str:
    """The tag of the tenant's trainer image: a hash of what its environment is built from
    (code/pyproject.toml, code/uv.lock if any, and the platform's release, which fixes the
    trainer base image and its runner), so a change to any of them names a new image."""
    pyproject = code_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise FileNotFoundError(pyproject)
    lock = code_dir / "uv.lock"
    locked = lock.read_bytes() if lock.is_file() else None
    return project_key(pyproject.read_bytes(), locked, platform().image.tag)


def team_pod_logs(context: Any, tenant: str) -> Any:
    """PipesK8sClient's reader of the pod's log, handing each message to `TeamMessages` rather
    than to Dagster's handler directly; what the team reported ends in its `reported`. (A class
    made here: dagster-k8s loads in the step, not with the code location.)"""
    from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

    class TeamPodLogs(PipesK8sPodLogsMessageReader):
        def __init__(self) -> None:
            super().__init__()
            self.reported: dict[str, Any] = new_reported()

        @contextmanager
        def read_messages(self, handler: Any) -> Iterator[dict[str, Any]]:
            team = TeamMessages(handler, context, tenant, self.reported)
            with super().read_messages(team) as params:  # type: ignore[arg-type]
                yield params

        @property
        def expected_writer_count(self) -> int:
            return 1  # one runner (and Dagster's default, without its preview warning)

    return TeamPodLogs()


def run_in_pod(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    job: TrainerJob,
    train: pd.DataFrame | pa.Table,
    *,
    lake: LakeResource,
    namespace: str,
    kubeconfig_file: str | None = None,
    poll_interval: float = 2.0,
) -> TrainerOutput:
    """Train `job`'s model on `train` (the training split only) in a pod in the tenant's
    `namespace`, exchanging files through `lake` (an `s3://` lake). PipesK8sClient talks to
    the cluster the step runs in (its token), or to `kubeconfig_file`'s.

    The returned artifact is in a new platform-private folder the caller removes once it has
    read the file (`shutil.rmtree(output.artifact.parent)`)."""
    where = job.where
    try:
        env_key = environment_key(job.code_dir)
    except FileNotFoundError:
        raise TrainerFailed(
            f"{where}: code/pyproject.toml not found (looked in {job.code_dir}): a trainer is a "
            "Python project in the tenant's code/ folder"
        ) from None
    from dagster_k8s import PipesK8sClient
    from dagster_k8s.client import DagsterK8sError

    reader = team_pod_logs(context, job.tenant)
    client = PipesK8sClient(
        message_reader=reader, kubeconfig_file=kubeconfig_file, poll_interval=poll_interval
    )
    try:
        s3 = lake.s3_client()
    except ValueError as exc:  # the deployment's lake, not the team's code: not retried
        raise TrainerFailed(f"{where}: {exc}") from None
    bucket, prefix = lake.s3_folder(
        job.tenant, EXCHANGE_KIND, f"{job.model}-{context.run.run_id[:8]}-{uuid.uuid4().hex[:8]}"
    )
    split, model = f"{prefix}train.parquet", f"{prefix}{job.artifact_file}"
    out_dir = Path(tempfile.mkdtemp(prefix="mlplat-trainer-model-"))  # 0700
    try:
        _upload_split(s3, bucket, split, train)
        expires = math.ceil(job.timeout_s) + URL_SLACK_S
        source = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": split}, ExpiresIn=expires
        )
        target = s3.generate_presigned_post(
            bucket,
            model,
            Conditions=[["content-length-range", 1, job.artifact_bytes]],
            ExpiresIn=expires,
        )
        meta, spec = trainer_pod(
            job.tenant,
            f"{job.tenant}/models/{job.model}",
            env_key=env_key,
            cpu=job.cpu,
            memory_gib=job.memory_gib,
            tmp_mib=job.tmp_bytes / 2**20,
            timeout_s=job.timeout_s,
        )
        meta["labels"]["dagster/run-id"] = label_value(context.run.run_id)
        extras = {
            "entrypoint": job.entrypoint,
            "sys_path": [
                str(IMAGE_CODE / code_source_root(job.code_dir).relative_to(job.code_dir))
            ],
            "flavor": job.flavor,
            "label": job.label,
            "features": list(job.features),
            "params": job.params,
            "input": {"url": source},
            "output": {"url": target["url"], "fields": target["fields"]},
        }
        started = time.monotonic()
        try:
            client.run(
                # Dagster's pipes code reads the run id the asset context deprecates.
                context=getattr(context, "op_execution_context", context),
                extras=extras,
                namespace=namespace,
                base_pod_meta=meta,
                base_pod_spec=spec,
                pod_wait_timeout=job.timeout_s + URL_SLACK_S,
            )
        except DagsterK8sError as exc:
            wall_s = time.monotonic() - started
            raise TrainerFailed(_failure(job, where, str(exc), wall_s)) from None
        wall_s = time.monotonic() - started
        artifact = out_dir / job.artifact_file
        _download_model(s3, bucket, model, artifact, job, where)
        return TrainerOutput(artifact=artifact, reported=reader.reported, wall_s=wall_s)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": split}, {"Key": model}], "Quiet": True}
        )


def _upload_split(s3: Any, bucket: str, key: str, train: pd.DataFrame | pa.Table) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = (
        train if isinstance(train, pa.Table) else pa.Table.from_pandas(train, preserve_index=False)
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue().to_pybytes())


def _download_model(
    s3: Any, bucket: str, key: str, artifact: Path, job: TrainerJob, where: str
) -> None:
    """The model file, into the platform's folder, after checking its size again (the POST
    policy caps it already; this does not trust that the store enforced it)."""
    from botocore.exceptions import ClientError

    try:
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except ClientError:
        raise TrainerFailed(
            f"{where}: the trainer finished without delivering a model file"
        ) from None
    if size > job.artifact_bytes:
        raise TrainerFailed(
            f"{where}: the model file is over the size cap of {job.artifact_bytes / 2**20:g} MiB "
            "(artifact_mib in limits.yaml); it was not kept"
        )
    s3.download_file(bucket, key, str(artifact))


def _failure(job: TrainerJob, where: str, error: str, wall_s: float) -> str:
    """Why the pod failed, from dagster-k8s's error (which carries the pod's last log lines)."""
    tail = error[-ERROR_TAIL_CHARS:]
    if wall_s >= job.timeout_s:
        return (
            f"{where} exceeded its time limit of {job.timeout_s:g} s (timeout_s in limits.yaml) "
            f"and its pod was stopped. {mark(job.tenant)}last output:\n{tail}"
        )
    refused = [ln for ln in error.splitlines() if ERROR_PREFIX in ln]
    if refused:
        reason = refused[-1].split(ERROR_PREFIX, 1)[1].strip().rstrip('"')
    else:
        reason = "its pod failed"
    return f"{where} failed: {reason}. {mark(job.tenant)}last output:\n{tail}"
