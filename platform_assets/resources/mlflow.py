"""MLflow tracking and model registry, through dagster-mlflow's run-per-Dagster-run tracking."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.resources.feature_store import write_private
from platform_assets.resources.first_use import creation_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowAuthError(RuntimeError):
    """The MLflow auth server refused a configuration call; names the call and its answer."""


def write_tenant_passwords(folder: Path, passwords: Mapping[str, str]) -> Path:
    """One 0600 file per tenant, named after it, holding its MLflow password."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for tenant, password in passwords.items():
        write_private(folder / tenant, password + "\n")
    return folder


def read_tenant_password(folder: Path, tenant: str) -> str:
    """`tenant`'s MLflow password from its file; refuses a missing, empty or shared-readable one."""
    path = Path(folder) / tenant
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise MlflowAuthError(f"{path}: no MLflow credential for tenant {tenant!r}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MlflowAuthError(
            f"{path}: MLflow credential is readable by others (mode {stat.S_IMODE(mode):04o}); "
            "it must be 0600"
        )
    password = path.read_text().strip()
    if not password:
        raise MlflowAuthError(f"{path}: MLflow credential for tenant {tenant!r} is empty")
    return password


class MlflowResource(dg.ConfigurableResource):
    """Where runs and registered models live. Registered model names are `<tenant>.<model>`.

    `tracking_uri` is a tracking server (`http://`, services) or a SQLite file (embedded). A
    server proxies artifacts itself (`mlflow-artifacts:/`), so `artifact_root` is only for the
    embedded store. A server's credentials are MLflow's own `MLFLOW_TRACKING_USERNAME` and
    `MLFLOW_TRACKING_PASSWORD` in the environment, never config.

    `artifact_root` is a local folder or any URI MLflow stores artifacts at (`s3://bucket/...`,
    whose endpoint MLflow takes from `MLFLOW_S3_ENDPOINT_URL` or `AWS_ENDPOINT_URL`).

    `tenant_credentials` is a folder of 0600 files, one per tenant holding its MLflow password
    (governance/mlflow_auth.py): runs are then logged as the tenant, while everything else
    (registering versions, tags, aliases) stays with the process's identity, the platform's
    governance user. A path, not a secret, so it may sit in config.
    """

    tracking_uri: str
    artifact_root: str | None = None
    tenant_credentials: str | None = None

    def client(self) -> MlflowClient:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        if self.tracking_uri.startswith("sqlite:///"):
            self._create_sqlite_store_once()
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _create_sqlite_store_once(self) -> None:
        """Parallel steps would otherwise race to create and migrate a new SQLite store (both
        the tracking and the registry store create tables on first use)."""
        import mlflow

        db = Path(self.tracking_uri.removeprefix("sqlite:///"))
        ready = db.with_name(f"{db.name}.ready")
        if ready.exists():
            return
        with creation_lock(self.tracking_uri, "mlflow store"):
            if ready.exists():
                return
            client = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
            ready.touch()

    def ensure_experiment(self, name: str) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        # None: a tracking server's own artifact destination (it proxies artifacts).
        location = None if self.artifact_root is None else self.artifact_location(name)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Another step of the tenant created it first (parallel steps, one server).
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id

    def artifact_location(self, experiment: str) -> str:
        if "://" in self.artifact_root and not self.artifact_root.startswith("file://"):
            return f"{self.artifact_root.rstrip('/')}/{experiment}"
        root = Path(self.artifact_root.removeprefix("file://"))
        root.mkdir(parents=True, exist_ok=True)
        return f"{root.resolve().as_uri()}/{experiment}"

    @contextmanager
    def as_tenant(self, tenant: str) -> Iterator[None]:
        """MLflow calls inside act as `tenant`'s MLflow user (when `tenant_credentials` is set).

        The MLflow client reads its credential from MLflow's own variables on every request, so
        they are swapped for the block and put back after; a step runs its MLflow calls in one
        thread."""
        if self.tenant_credentials is None:
            yield
            return
        password = read_tenant_password(Path(self.tenant_credentials), tenant)
        names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        saved = {name: os.environ.get(name) for name in names}
        os.environ.update(dict(zip(names, (tenant, password), strict=True)))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    @contextmanager
    def run(
        self, context: dg.AssetExecutionContext, experiment: str, tags: dict[str, str], tenant: str
    ):
        """One MLflow run per Dagster run and experiment, shared by every step of that run,
        logged as `tenant` (see `as_tenant`).

        dagster-mlflow finds the run by the `dagster_run_id` tag, so the model step and the
        evaluation step (separate processes under the multiprocess executor) log to one run.
        """
        with self.as_tenant(tenant):
            yield from self._run(context, experiment, tags)

    def _run(self, context: dg.AssetExecutionContext, experiment: str, tags: dict[str, str]):
        import mlflow
        from dagster_mlflow.resources import MlFlow

        self.ensure_experiment(experiment)
        init = SimpleNamespace(
            log=context.log,
            dagster_run=SimpleNamespace(job_name=context.job_name),
            run_id=context.run_id,
            resource_config={
                "mlflow_tracking_uri": self.tracking_uri,
                "experiment_name": experiment,
                "extra_tags": tags,
            },
        )
        with warnings.catch_warnings():
            # MlFlow is marked beta; the warning is about its API, which we pin and test.
            warnings.simplefilter("ignore", category=dg.BetaWarning)
            tracker = MlFlow(init)
        try:
            yield tracker
        except BaseException:
            tracker.cleanup_on_error()
            raise
        else:
            mlflow.end_run()

    def registered_name(self, tenant: str, model: str) -> str:
        return f"{tenant}.{model}"

    def version_by_alias(self, name: str, alias: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
