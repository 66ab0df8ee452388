"""Build platform definitions from a throwaway tenant folder, as a pull request would add it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster.components.testing.utils import create_defs_folder_sandbox

from platform_assets.composition.locations import all_locations
from platform_assets.tenancy.locations import MODULE

DEMO_DEFS = Path(__file__).resolve().parents[1] / "platform_assets" / "defs"


def write_component(folder: Path, type_name: str, attributes: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump({"type": type_name, "attributes": attributes}, sort_keys=False))
    return path


# The demo's models trained by a team's own code, in a bubblewrap sandbox: left out of the
# copied tenants unless a test asks for them (`trainers=True`), so the many tests of the rest
# of a pipeline do not each build a trainer environment and train in a sandbox.
TRAINER_MODELS = (Path("ridehail/models/driver_churn_lgbm"),)


@contextmanager
def sandbox(
    monkeypatch: pytest.MonkeyPatch,
    tenants: tuple[str, ...] = ("ridehail",),
    trainers: bool = False,
) -> Iterator[tuple[Path, callable]]:
    """Copy demo tenants into a sandbox defs folder; yields (defs folder, build) where build()
    builds the folder as production does: every location's definitions, merged."""
    with create_defs_folder_sandbox() as box:
        for tenant in tenants:
            shutil.copytree(DEMO_DEFS / tenant, box.defs_folder_path / tenant)
        if not trainers:
            for model in TRAINER_MODELS:
                shutil.rmtree(box.defs_folder_path / model, ignore_errors=True)
        monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(box.defs_folder_path))

        def build() -> dg.Definitions:
            return all_locations(box.defs_folder_path)

        yield box.defs_folder_path, build


def error_chain(exc: BaseException | None) -> str:
    """The messages of an exception and of every exception it was raised from."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def location_origin(location: str, job_name: str) -> RemoteJobOrigin:
    """The origin the webserver gives a run of `job_name` launched from code location
    `location` of the workspace."""
    target = LoadableTargetOrigin(module_name=MODULE, attribute=location)
    return RemoteJobOrigin(
        RemoteRepositoryOrigin(InProcessCodeLocationOrigin(target, location_name=location), "x"),
        job_name,
    )


def launch_from(
    location: str,
    assets: list[dg.AssetsDefinition],
    instance: dg.DagsterInstance,
    resources: dict | None = None,
    tags: dict[str, str] | None = None,
) -> dg.DagsterRun:
    """Run `assets` as the webserver launches a run from code location `location`: created with
    the location's remote origin (Dagster then sets `dagster/code_location`), executed in this
    process. Returns the finished run."""
    job = dg.Definitions(
        assets=assets, resources=resources, executor=dg.in_process_executor
    ).resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(
        job, remote_job_origin=location_origin(location, job.name), tags=tags or {}
    )
    execute_run(InMemoryJob(job), run, instance)
    return instance.get_run_by_id(run.run_id)
