"""Which way each metric improves, and thresholds: light enough for sensors (no numpy/pandas)."""

from __future__ import annotations

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "average_precision": True,
    "f1": True,
    "accuracy": True,
    "log_loss": False,
    "brier": False,
}


def failed_thresholds(values: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    failed = []
    for name, bound in thresholds.items():
        if name not in values:
            failed.append(f"{name}: not computed")
        elif HIGHER_IS_BETTER.get(name, True) and values[name] < bound:
            failed.append(f"{name} {values[name]:.4f} < {bound}")
        elif not HIGHER_IS_BETTER.get(name, True) and values[name] > bound:
            failed.append(f"{name} {values[name]:.4f} > {bound}")
    return failed
