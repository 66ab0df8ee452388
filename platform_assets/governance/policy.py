"""Assessing a candidate version against its model's promotion policy, on the platform's own
evidence: thresholds, required checks and the improvement over the champion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from platform_assets.governance import rbac
from platform_assets.governance.evidence import EvidenceError, EvidenceReader
from platform_assets.models.metrics import HIGHER_IS_BETTER, failed_thresholds
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.specs import ModelSpec


class PolicyRejected(rbac.Refused):
    """A candidate that does not meet its model's promotion policy."""

    def __init__(self, message: str, evidence: dict[str, Any]):
        super().__init__("promotion-policy", message)
        self.evidence = evidence


@dataclass
class Assessment:
    ok: bool
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)


def assess(
    reader: EvidenceReader | None,
    catalog: TenantCatalog,
    spec: ModelSpec,
    version: int,
    champion: int | None,
    record: dg.EventLogRecord | None = None,
) -> Assessment:
    """Does `version` meet its policy against the given champion version? Judged only on
    the platform's own records (see evidence.py); `record` is the evaluation report event
    when the caller already holds it."""
    if reader is None:
        return Assessment(False, "no Dagster instance to read evidence from")
    try:
        found = reader.gather(catalog, spec, version, record)
    except EvidenceError as exc:
        return Assessment(False, f"no evidence: {exc}", {"evidence_error": str(exc)})
    evidence = {**found.as_dict(), "champion_before": champion}
    metrics = found.metrics
    if found.problems:
        return Assessment(False, f"evidence incomplete: {'; '.join(found.problems)}", evidence)
    metric = spec.evaluation.primary_metric
    if metric not in metrics:
        return Assessment(False, f"v{version} has no evaluation ({metric} missing)", evidence)
    failed = failed_thresholds(metrics, spec.evaluation.thresholds)
    if failed:
        return Assessment(False, f"fails thresholds: {', '.join(failed)}", evidence)
    bad = [n for n, c in found.checks.items() if not c["passed"]]
    if bad:
        return Assessment(False, f"required checks not passed: {', '.join(sorted(bad))}", evidence)
    value = metrics[metric]
    if champion is None:
        return Assessment(True, f"first version to meet policy ({metric}={value:.4f})", evidence)
    if champion == version:
        return Assessment(False, f"v{version} is already champion", evidence)
    try:
        champ = reader.gather(catalog, spec, champion).metrics.get(metric)
    except EvidenceError:
        champ = None
    if champ is None:
        return Assessment(True, f"champion v{champion} has no recorded {metric}", evidence)
    gain = value - champ if HIGHER_IS_BETTER[metric] else champ - value
    needed = spec.promotion.min_improvement
    evidence["improvement"] = round(gain, 6)
    if gain <= needed:
        return Assessment(
            False,
            f"{metric}={value:.4f} does not beat champion v{champion} ({champ:.4f}) "
            f"by more than {needed}",
            evidence,
        )
    return Assessment(
        True,
        f"{metric}={value:.4f} beats champion v{champion} ({champ:.4f}) by {gain:.4f}",
        evidence,
    )
