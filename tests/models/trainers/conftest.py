"""Trainer sandbox tests: a real bubblewrap sandbox (skips, or fails under
MLPLAT_REQUIRE_SERVICES=1, where it cannot run) and one real uv-built environment per session.

Every run goes through a real Dagster step (`dg.materialize` of a one-asset graph), so Pipes
messages land in a real event log the tests read back.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from platform_assets.models.trainers.environment import trainer_environment
from platform_assets.models.trainers.job import TrainerFailed, TrainerJob, TrainerOutput
from platform_assets.models.trainers.sandbox import check_sandbox, run_in_sandbox
from tests.conftest import skip_or_fail

TENANT = "ridehail"
# One project for every test (so one environment): the code changes per test, not the deps.
PYPROJECT = """\
[project]
name = "ridehail-models"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["lightgbm>=4.6", "scikit-learn>=1.6", "skops>=0.11", "pandas>=2.2", "pyarrow>=16"]
"""


@dataclass
class Trained:
    output: TrainerOutput | None
    error: TrainerFailed | None
    logs: list[str] = field(default_factory=list)
    # The metadata of every materialization and check result of the step.
    recorded: list[dict] = field(default_factory=list)

    @property
    def everything(self) -> str:
        """All the platform kept from the run: logs, error, reported data and the artifact."""
        parts = [*self.logs, str(self.error or "")]
        if self.output is not None:
            parts += [
                repr(self.output.reported),
                self.output.artifact.read_bytes().decode("latin-1"),
            ]
        return "\n".join(parts)


@pytest.fixture(scope="session")
def trainer_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data root the session's environment is cached under."""
    try:
        check_sandbox()
    except TrainerFailed as exc:
        skip_or_fail(str(exc))
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def session_env(trainer_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPLAT_DATA", str(trainer_data))
        return trainer_environment(make_job(write_code(tmp_path_factory.mktemp("warm"), "")))


@pytest.fixture
def trainer_home(
    session_env: Path, trainer_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """This test's folder; the platform's data root is the session's (its envs are built)."""
    monkeypatch.setenv("MLPLAT_DATA", str(trainer_data))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def write_code(root: Path, module: str, pyproject: str = PYPROJECT) -> Path:
    """A tenant's code/ folder with `ridehail_models/retention.py` (src layout)."""
    code = root / "code"
    package = code / "src" / "ridehail_models"
    package.mkdir(parents=True, exist_ok=True)
    (code / "pyproject.toml").write_text(pyproject)
    (package / "__init__.py").write_text("")
    (package / "retention.py").write_text(textwrap.dedent(module))
    return code


def make_job(code_dir: Path, **overrides: Any) -> TrainerJob:
    fields: dict[str, Any] = {
        "tenant": TENANT,
        "model": "retention",
        "source": Path("platform_assets/defs/ridehail/models/retention.yaml"),
        "code_dir": code_dir,
        "entrypoint": "ridehail_models.retention:train",
        "flavor": "lightgbm",
        "params": {"num_leaves": 7},
        "label": "churned",
        "features": ("trips", "rating"),
        "cpu": 1.0,
        "memory_gib": 2.0,
        "timeout_s": 120.0,
        "artifact_bytes": 16 * 2**20,
        "tmp_bytes": 64 * 2**20,
    }
    return TrainerJob(**(fields | overrides))


def training_split(rows: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trips": [i % 17 for i in range(rows)],
            "rating": [(i % 5) + 0.5 for i in range(rows)],
            "churned": [int(i % 17 < 6) for i in range(rows)],
            # Not a feature or the label: the runner must not hand it to the team's code.
            "rider_id": [f"r{i}" for i in range(rows)],
        }
    )


def train_in_step(job: TrainerJob, train: pd.DataFrame | None = None) -> Trained:
    """Run `job` in a real Dagster step; return its output or failure and the step's logs."""
    box: dict[str, Any] = {}

    @dg.asset(name="trained")
    def trained(context):  # (no annotation: they are strings here, and Dagster checks it)
        try:
            box["output"] = run_in_sandbox(
                context, job, train if train is not None else training_split()
            )
        except TrainerFailed as exc:
            box["error"] = exc
        # A step that opened a Pipes session must return its result.
        return dg.MaterializeResult()

    with dg.instance_for_test() as instance:
        result = dg.materialize([trained], instance=instance)
        assert result.success
        entries = instance.all_logs(result.run_id)
        logs = [e.user_message for e in entries]
        recorded = [
            dict(e.dagster_event.event_specific_data.materialization.metadata)
            for e in entries
            if e.dagster_event is not None and e.dagster_event.is_step_materialization
        ]
        recorded += [
            {"check": e.dagster_event.event_specific_data.check_name}
            for e in entries
            if e.dagster_event is not None
            and e.dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
    return Trained(box.get("output"), box.get("error"), logs, recorded)


@pytest.fixture
def trainer(trainer_home: Path) -> Iterator[Any]:
    """`trainer(module_source, **job_fields) -> Trained`: the module as the tenant's code."""

    outputs: list[TrainerOutput] = []

    def run(module: str, **overrides: Any) -> Trained:
        trained = train_in_step(make_job(write_code(trainer_home, module), **overrides))
        if trained.output is not None:
            outputs.append(trained.output)
        return trained

    yield run
    for output in outputs:  # the caller removes the backend's private folder, as the step does
        shutil.rmtree(output.artifact.parent, ignore_errors=True)
