"""Drift statistics between a reference sample (the training set) and recent data: PSI over the
reference's quantile bins (numeric) or categories, the two-sample Kolmogorov-Smirnov statistic
with scipy's asymptotic p-value, and the share of missing values. Vectorised over each column
with numpy; the tests hold them to brute force and to `scipy.stats.ks_2samp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # numpy loads in the steps, not with the code location
    import numpy as np

    from platform_assets.tenancy.specs import DriftSeverity, DriftThresholds

Kind = Literal["numeric", "categorical"]
# Floor for a bin's share: an empty bin would make the PSI infinite. 1e-4 is the usual choice
# (a bin holding under 0.01% of either side counts as holding that much).
EPSILON = 1e-4


@dataclass
class Drift:
    """One column compared. `psi`/`ks` are None when either side has no value to compare
    (their missing share says why); `bins` and the shares are what the plots draw."""

    name: str
    kind: Kind
    n_reference: int
    n_current: int
    missing_reference: float
    missing_current: float
    psi: float | None = None
    ks: float | None = None
    ks_pvalue: float | None = None
    bins: list[str] = field(default_factory=list)
    reference_share: list[float] = field(default_factory=list)
    current_share: list[float] = field(default_factory=list)

    @property
    def missing_rise(self) -> float:
        return self.missing_current - self.missing_reference

    def row(self) -> dict:
        """The statistics as one row of the drift table the asset writes."""
        return {
            "column": self.name,
            "kind": self.kind,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "psi": self.psi,
            "ks": self.ks,
            "ks_pvalue": self.ks_pvalue,
            "missing_reference": self.missing_reference,
            "missing_current": self.missing_current,
        }


def missing_mask(values: np.ndarray) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if values.dtype.kind == "f":
        return np.isnan(values)
    return pd.isna(values)


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges of `bins` equal-frequency bins of the (non-missing) reference; tied
    quantiles merge, so a feature with few distinct values gets fewer bins."""
    import numpy as np

    inner = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def sorted_bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of sorted `values` in each of the len(edges)+1 bins (-inf, e0), [e0, e1), ...,
    [ek, inf): a binary search per edge, not per value."""
    import numpy as np

    below = np.searchsorted(values, edges, side="left")
    return np.diff(np.concatenate([[0], below, [len(values)]])) / max(len(values), 1)


def ks_statistic(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> float:
    """The two-sample KS statistic, sup |F_ref - F_cur|, of two sorted samples: scipy's
    `ks_2samp` statistic. Both ECDFs are steps, and between two reference values F_ref is flat,
    so the gap is widest just at or just before a reference value: both CDFs are evaluated
    there only (four binary searches per reference value), never per recent row."""
    import numpy as np

    n_ref, n_cur = len(ref_sorted), len(cur_sorted)
    gaps = [
        np.searchsorted(ref_sorted, ref_sorted, side=side) / n_ref
        - np.searchsorted(cur_sorted, ref_sorted, side=side) / n_cur
        for side in ("right", "left")
    ]
    return float(max(np.max(np.abs(gaps[0])), np.max(np.abs(gaps[1]))))


def ks_pvalue(statistic: float, n_reference: int, n_current: int) -> float:
    """Asymptotic p-value from Kolmogorov's limiting distribution (scipy's `kstwobign`)."""
    import math

    from scipy.stats import kstwobign

    en = n_reference * n_current / (n_reference + n_current)
    return float(kstwobign.sf(math.sqrt(en) * statistic))


def psi(reference_share: np.ndarray, current_share: np.ndarray) -> float:
    """Population stability index: sum over bins of (cur - ref) * ln(cur / ref)."""
    import numpy as np

    ref = np.clip(reference_share, EPSILON, None)
    cur = np.clip(current_share, EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _edge_labels(edges: np.ndarray) -> list[str]:
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    return [f"[{lo}, {hi})" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def compare_numeric(name: str, reference: np.ndarray, current: np.ndarray, bins: int) -> Drift:
    """One sort per side gives it all: NaN sorts last (the missing share), the bins are binary
    searches of the edges, the KS statistic a merge of the two sorted samples."""
    import numpy as np

    ref = np.sort(np.asarray(reference, dtype="float64"))
    cur = np.sort(np.asarray(current, dtype="float64"))
    ref_valid = len(ref) - int(np.count_nonzero(np.isnan(ref)))
    cur_valid = len(cur) - int(np.count_nonzero(np.isnan(cur)))
    result = Drift(
        name,
        "numeric",
        len(ref),
        len(cur),
        1 - ref_valid / len(ref) if len(ref) else 0.0,
        1 - cur_valid / len(cur) if len(cur) else 0.0,
    )
    ref, cur = ref[:ref_valid], cur[:cur_valid]
    if len(ref) == 0 or len(cur) == 0:
        return result
    edges = quantile_edges(ref, bins)
    ref_share, cur_share = sorted_bin_shares(ref, edges), sorted_bin_shares(cur, edges)
    result.psi = psi(ref_share, cur_share)
    result.ks = ks_statistic(ref, cur)
    result.ks_pvalue = ks_pvalue(result.ks, len(ref), len(cur))
    result.bins = _edge_labels(edges)
    result.reference_share, result.current_share = ref_share.tolist(), cur_share.tolist()
    return result


def compare_categorical(name: str, reference: np.ndarray, current: np.ndarray) -> Drift:
    """PSI over the categories either side holds; a category only one side has counts too."""
    import numpy as np

    reference, current = np.asarray(reference), np.asarray(current)
    ref_missing, cur_missing = missing_mask(reference), missing_mask(current)
    ref, cur = reference[~ref_missing], current[~cur_missing]
    result = Drift(
        name,
        "categorical",
        len(reference),
        len(current),
        float(ref_missing.mean()) if len(reference) else 0.0,
        float(cur_missing.mean()) if len(current) else 0.0,
    )
    if len(ref) == 0 or len(cur) == 0:
        return result
    if ref.dtype.kind in "OUS" or cur.dtype.kind in "OUS":
        ref, cur = ref.astype(str), cur.astype(str)
    categories, codes = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    k = len(categories)
    ref_share = np.bincount(codes[: len(ref)], minlength=k) / len(ref)
    cur_share = np.bincount(codes[len(ref) :], minlength=k) / len(cur)
    result.psi = psi(ref_share, cur_share)
    result.bins = [str(c) for c in categories]
    result.reference_share, result.current_share = ref_share.tolist(), cur_share.tolist()
    return result


def compare(
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    kinds: dict[str, Kind],
    bins: int,
) -> list[Drift]:
    """Every column of `kinds`, in its order."""
    return [
        compare_numeric(name, reference[name], current[name], bins)
        if kind == "numeric"
        else compare_categorical(name, reference[name], current[name])
        for name, kind in kinds.items()
    ]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    blocking: bool  # failed a statistic whose severity is `block`
    failures: list[str]


def judge(
    drift: Drift,
    thresholds: DriftThresholds,
    severity: DriftSeverity,
    *,
    prediction: bool = False,
) -> Verdict:
    """Which thresholds a column breaks. A feature is judged on PSI, KS (numeric) and the
    rise of its missing share; the score on PSI and KS, with the `prediction` severity."""
    failures, blocking = [], False
    tests = [
        ("psi", drift.psi, thresholds.psi),
        ("ks", drift.ks, thresholds.ks),
        ("missing", drift.missing_rise, thresholds.missing),
    ]
    for stat, value, bound in tests:
        if value is None or value <= bound:
            continue
        what = "missing share rise" if stat == "missing" else stat.upper()
        failures.append(f"{drift.name}: {what} {value:.4f} > {bound:g}")
        blocking |= (severity.prediction if prediction else getattr(severity, stat)) == "block"
    return Verdict(not failures, blocking, failures)
