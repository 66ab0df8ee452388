"""Build platform definitions from a throwaway tenant folder, as a pull request would add it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing.utils import create_defs_folder_sandbox

from platform_assets.composition.locations import all_locations

DEMO_DEFS = Path(__file__).resolve().parents[1] / "platform_assets" / "defs"


def write_component(folder: Path, type_name: str, attributes: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "defs.yaml"
    path.write_text(yaml.safe_dump({"type": type_name, "attributes": attributes}, sort_keys=False))
    return path


@contextmanager
def sandbox(
    monkeypatch: pytest.MonkeyPatch, tenants: tuple[str, ...] = ("ridehail",)
) -> Iterator[tuple[Path, callable]]:
    """Copy demo tenants into a sandbox defs folder; yields (defs folder, build) where build()
    builds the folder as production does: every location's definitions, merged."""
    with create_defs_folder_sandbox() as box:
        for tenant in tenants:
            shutil.copytree(DEMO_DEFS / tenant, box.defs_folder_path / tenant)
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
