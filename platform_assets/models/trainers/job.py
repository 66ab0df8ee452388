"""What the model step hands to a trainer backend, and what it gets back.

The backends (`sandbox.py`: bubblewrap; `pod.py`: Kubernetes through `PipesK8sClient`) take a
`TrainerJob` and the training split, and return a `TrainerOutput`: the model file the team's
code returned, in its flavor's safe format, in a folder only the platform can write. The
platform then loads and checks that file itself (`models/flavors.py`); nothing the trainer
says about it is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Flavor = Literal["xgboost", "lightgbm", "sklearn", "onnx"]

# The one file the runner writes for each flavor, in that flavor's safe format.
ARTIFACT_FILES: dict[str, str] = {
    "xgboost": "model.json",
    "lightgbm": "model.lgb",
    "sklearn": "model.skops",
    "onnx": "model.onnx",
}


class TrainerFailed(RuntimeError):
    """The team's training code did not produce a model the platform accepts. The message names
    the model's file, the trainer's entrypoint and why (its traceback, a limit it hit, ...)."""


@dataclass(frozen=True)
class TrainerJob:
    tenant: str
    model: str  # the model's name in its tenant
    source: Path  # the model YAML, named in every error
    code_dir: Path  # the tenant's `code/` folder: a Python project (pyproject.toml, uv.lock?)
    entrypoint: str  # "package.module:function" inside code/
    flavor: Flavor
    params: dict[str, Any]
    label: str
    features: tuple[str, ...]
    cpu: float  # granted to the step, and billed
    memory_gib: float
    timeout_s: float
    artifact_bytes: int
    tmp_bytes: int

    @property
    def where(self) -> str:
        """What starts every message about this training: the model's file and the trainer."""
        return f"{self.source}: trainer {self.entrypoint}"

    @property
    def artifact_file(self) -> str:
        return ARTIFACT_FILES[self.flavor]


@dataclass(frozen=True)
class TrainerOutput:
    artifact: Path  # the model file, in a platform-private folder
    # What the team's code reported through Pipes (metadata of `report_asset_materialization`,
    # custom messages), bounded; shown in the UI as the team's own, never read by promotion.
    reported: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU of the sandbox's processes (0 where not measured)
    max_rss_bytes: int = 0
