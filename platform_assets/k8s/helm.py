"""The `helm` binary the platform renders with, and the Dagster chart pulled from a chart
repository the user has added (`helm repo add`), for its values schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from platform_assets.env import repo_root


class ToolMissing(RuntimeError):
    """A tool rendering needs is not installed; the message says how to get it."""


def helm_binary() -> str:
    """MLPLAT_HELM, else the one `make install` puts in .tools/bin, else helm on PATH."""
    for candidate in (os.environ.get("MLPLAT_HELM"), str(repo_root() / ".tools/bin/helm")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("helm")
    if found:
        return found
    raise ToolMissing("helm is not installed: `make install` puts it in .tools/bin/helm")


class ChartNotPulled(LookupError):
    """No added chart repository serves the chart at this version, or pulling it failed."""


def _helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True)


def repository_chart(chart: str, version: str) -> str:
    """`<repo>/<chart>` at `version` in the repositories the user added (from helm's local
    index cache: `helm repo update` refreshes it), e.g. `dagster/dagster`."""
    out = _helm("search", "repo", chart, "--version", version, "-o", "json")
    if out.returncode != 0 and "no repositories configured" not in out.stderr:
        raise ChartNotPulled(f"`helm search repo` failed: {out.stderr.strip()}")
    entries = json.loads(out.stdout or "[]") if out.returncode == 0 else []
    found = sorted(e["name"] for e in entries if e["name"].split("/", 1)[1] == chart)
    if not found:
        raise ChartNotPulled(
            f"no chart repository you added (`helm repo list`) has chart {chart!r} at version "
            f"{version} (add Dagster's: `helm repo add dagster https://dagster-io.github.io/helm`)"
        )
    return found[0]


def pull_chart(reference: str, version: str, into: Path) -> Path:
    """`helm pull --untar` a chart (`repo/chart` or a URL) at `version` into `into`; the
    chart's folder."""
    out = _helm("pull", reference, "--version", version, "--untar", "--untardir", str(into))
    if out.returncode != 0:
        raise ChartNotPulled(f"`helm pull {reference}` failed: {out.stderr.strip()}")
    [folder] = [p for p in into.iterdir() if p.is_dir()]
    return folder
