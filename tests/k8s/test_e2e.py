"""`make k8s-e2e` where no cluster answers: it skips, saying why, and exits 0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from platform_assets.k8s.jobs import KUBECONFIG

ROOT = Path(__file__).resolve().parents[2]


def test_e2e_skips_with_the_reason_where_no_cluster_answers(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)  # an API server address nothing listens on
    out = subprocess.run(
        ["bash", "deploy/k8s-e2e.sh"],
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("SKIP make k8s-e2e: "), out.stdout
    assert "kubectl is not installed" in out.stdout or "no Kubernetes API answers" in out.stdout
