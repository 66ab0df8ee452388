"""Intra-project imports sit at the top of each module, so a reader sees the real graph that
`lint-imports` checks (docs/architecture.md, Layers). Inside a function only heavy third-party
libraries are imported, and the Feast offline store, which is one (feast, DuckDB and Arrow at
its top)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform_assets"
HEAVY_PROJECT_MODULES = ("platform_assets.features.offline_store",)


def local_project_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "platform_assets" and not name.startswith(
                    HEAVY_PROJECT_MODULES
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_project_imports_are_at_module_top():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in local_project_imports(path)]
    assert found == []


def test_a_local_project_import_is_found(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n"
        "    import duckdb\n"
        "    from platform_assets.features.offline_store import layout_for_join\n"
        "    from platform_assets.tenancy import specs\n"
    )
    assert local_project_imports(module, tmp_path) == ["m.py:4: platform_assets.tenancy"]


def test_every_benchmark_module_imports():
    """`make bench` runs these only when asked: a name they import that moved fails here."""
    bench = PACKAGE.parent / "bench"
    for path in sorted(bench.glob("*.py")):
        importlib.import_module(f"bench.{path.stem}")
