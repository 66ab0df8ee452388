"""The drift asset of a model, `<tenant>/drift/<model>`: recent features and champion scores
against the champion's training set, one asset check per feature and one for the score, with
thresholds and severities from the model's `monitoring:` YAML (docs/monitoring.md).

Not `from __future__ import annotations`: Dagster resolves the asset's resource annotations
from the step wrapper's module (tenancy/assets.py), where these names are not defined.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.governance.reconcile import champion_artifact
from platform_assets.models.flavors import load_verified
from platform_assets.models.training import feature_columns, png_markdown
from platform_assets.monitoring.drift import compare, compare_numeric, judge
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import GATED, Placement, asset_kwargs, team_asset
from platform_assets.tenancy.specs import (
    ComputeResources,
    FeatureSetSpec,
    ModelSpec,
    Monitoring,
    TenantSpec,
)

if TYPE_CHECKING:  # pyarrow and numpy load in the steps, not with the code location
    import numpy as np
    import pyarrow as pa

    from platform_assets.monitoring.drift import Drift, Kind

PREDICTION_CHECK = "prediction_drift"
PREDICTION = "score"  # the column the score is compared under
# Where the recent rows came from, in the asset's metadata.
FROM_LOG, FROM_BATCH = "request_log", "batch_scores"


def model_features(spec: ModelSpec, resolved: dict[str, tuple[str, FeatureSetSpec]]) -> dict:
    """The model's features and their declared types, in the FeatureService's order."""
    features: dict[str, str] = {}
    for ref in spec.features:
        set_ref, name = ref.rsplit(":", 1)
        fs = resolved[set_ref][1]
        for feature in fs.features if name == "*" else [name]:
            features.setdefault(feature, fs.features[feature])
    return features


def feature_check(feature: str) -> str:
    return f"drift_{feature}"


def _kinds(features: dict[str, str]) -> "dict[str, Kind]":
    # Strings and booleans have categories; a count or a rate is binned by quantiles.
    return {
        name: "categorical" if kind in ("string", "bool") else "numeric"
        for name, kind in features.items()
    }


def _columns(table: "pa.Table", names: list[str], what: str) -> "dict[str, np.ndarray]":
    """Columns as numpy arrays (nulls as NaN in float columns); a missing column is an error
    naming the table."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"{what} has no column {', '.join(missing)} (it has: {', '.join(table.column_names)})"
        )
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}


def recent_rows(
    lake: LakeResource, tenant: str, spec: ModelSpec, champion: int, now: datetime
) -> "tuple[str, pa.Table, str] | None":
    """The champion's recent rows: its request log over the window when it holds at least
    `min_rows`, else its batch scores. Returns (origin, table, score column), or None when
    neither holds a row of the champion's."""
    import pyarrow.compute as pc

    window = spec.monitoring.window_days
    since = now - timedelta(days=window)
    log = lake.batches(tenant, "serving", spec.name, since=since)
    logged = 0
    if log is not None:
        keep = pc.and_(
            pc.and_(pc.greater_equal(log["ts"], since), pc.is_valid(log["prediction"])),
            pc.equal(log["model_version"], champion),
        )
        log = log.filter(pc.fill_null(keep, False))
        logged = log.num_rows
        if logged >= spec.monitoring.min_rows:
            return FROM_LOG, log, "prediction"
    try:
        scores = lake.read(tenant, "predictions", spec.name)
    except FileNotFoundError:
        return None
    scores = scores.filter(pc.equal(scores["model_version"], champion))
    if scores.num_rows == 0:
        return None
    dg.get_dagster_logger().info(
        f"{tenant}.{spec.name}: {logged} logged requests of v{champion} in the last {window:g} "
        f"days (< min_rows {spec.monitoring.min_rows}); comparing the batch scores instead"
    )
    return FROM_BATCH, scores, "score"


def reference_version(
    lake: LakeResource,
    mlflow: MlflowResource,
    registered: str,
    champion: int,
    tenant: str,
    model: str,
) -> tuple[str, str]:
    """The training-set snapshot the champion was trained on (its MLflow version's tag), or
    the current one when that is not recoverable; and a sentence saying which."""
    tag = (
        mlflow.client()
        .get_model_version(registered, str(champion))
        .tags.get("training_set_version")
    )
    current = lake.current(tenant, "training_sets", model).version
    if tag is None:
        return current, f"current training set @{current} (v{champion} has no training-set tag)"
    try:
        lake.snapshot(tenant, "training_sets", model, tag)
    except FileNotFoundError:
        return current, f"current training set @{current} (v{champion}'s @{tag} was pruned)"
    return tag, f"the training set v{champion} was trained on, @{tag}"


def _plot(drift: "Drift", title: str) -> str:
    """Reference and recent shares per bin, side by side, as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(drift.bins))
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=70)
    ax.bar(x - 0.2, drift.reference_share, 0.4, label="training set")
    ax.bar(x + 0.2, drift.current_share, 0.4, label="recent")
    ax.set_xticks(x, drift.bins, rotation=45, ha="right", fontsize=6)
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    image = png_markdown(fig)
    plt.close(fig)
    return image


def _summary_plot(results: "list[Drift]", threshold: float, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 0.3 * len(results) + 1), dpi=70)
    names = [r.name for r in results]
    values = [r.psi if r.psi is not None else 0.0 for r in results]
    ax.barh(names, values, color=["tab:red" if v > threshold else "tab:blue" for v in values])
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.invert_yaxis()
    ax.set_xlabel("PSI")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    image = png_markdown(fig)
    plt.close(fig)
    return image


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _table(results: "list[Drift]") -> str:
    lines = [
        "| column | kind | PSI | KS | missing (train → recent) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.kind} | {_fmt(r.psi)} | {_fmt(r.ks)} | "
            f"{r.missing_reference:.2%} → {r.missing_current:.2%} |"
        )
    return "\n".join(lines)


def _check_result(
    check: str, drift: "Drift | None", monitoring: Monitoring, absent: str, prediction: bool = False
) -> dg.AssetCheckResult:
    if drift is None:
        return dg.AssetCheckResult(
            check_name=check,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=absent,
        )
    verdict = judge(drift, monitoring.thresholds, monitoring.severity, prediction=prediction)
    return dg.AssetCheckResult(
        check_name=check,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR if verdict.blocking else dg.AssetCheckSeverity.WARN,
        description="; ".join(verdict.failures) or f"{drift.name}: within the thresholds",
        metadata={
            "psi": drift.psi if drift.psi is not None else float("nan"),
            "ks": drift.ks if drift.ks is not None else float("nan"),
            "ks_pvalue": drift.ks_pvalue if drift.ks_pvalue is not None else float("nan"),
            "missing_reference": drift.missing_reference,
            "missing_current": drift.missing_current,
            "rows_reference": drift.n_reference,
            "rows_recent": drift.n_current,
            "plot": dg.MetadataValue.md(_plot(drift, f"{drift.name}: training set vs recent")),
        },
    )


def drift_asset(
    tenant: TenantSpec,
    spec: ModelSpec,
    resolved: dict[str, tuple[str, FeatureSetSpec]],
    requested: ComputeResources,
    source: Path | None = None,
    placement: Placement | None = None,
) -> dg.AssetsDefinition:
    """`<tenant>/drift/<model>` with a check `drift_<feature>` per feature and
    `prediction_drift`. Produces nothing while the model has no champion or no recent rows."""
    registered = f"{tenant.name}.{spec.name}"
    monitoring = spec.monitoring
    features = model_features(spec, resolved)
    kinds = _kinds(features)
    kwargs = asset_kwargs(
        tenant,
        "drift",
        ["drift", spec.name],
        f"Drift of {registered}'s features and scores (request log, else batch scores) from "
        "the champion's training set: PSI, KS and missing share per feature, PSI and KS of the "
        "score.",
        {"scipy", "parquet"},
        requested,
        source=source,
        metadata={"monitoring": dg.MetadataValue.json(monitoring.model_dump(mode="json"))},
        placement=placement,
    )
    key = kwargs["key"]
    severity = monitoring.severity
    feature_blocks = "block" in (severity.psi, severity.ks, severity.missing)
    check_specs = [
        dg.AssetCheckSpec(
            feature_check(name),
            asset=key,
            blocking=feature_blocks,
            description=f"{name} is distributed as in the champion's training set",
        )
        for name in features
    ]
    check_specs.append(
        dg.AssetCheckSpec(
            PREDICTION_CHECK,
            asset=key,
            blocking=severity.prediction == "block",
            description="The champion's recent scores are distributed as on its training set",
        )
    )
    deps = [
        dg.AssetKey([tenant.name, "training_sets", spec.name]),
        dg.AssetKey([tenant.name, "predictions", spec.name]),
    ]

    @team_asset(
        **kwargs,
        deps=deps,
        check_specs=check_specs,
        optional_checks=True,
        automation_condition=GATED,
    )
    def drift(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        mlflow: MlflowResource,
        pricing: PricingResource,
    ):
        found = champion_artifact(registered)
        if found is None:
            context.log.info(f"{registered} has no champion yet; no drift to watch")
            return
        champion, recorded = found
        import pyarrow as pa

        with meter(tenant.name, requested, pricing.catalog()) as usage:
            now = datetime.now(UTC)
            recent = recent_rows(lake, tenant.name, spec, champion, now)
            if recent is None:
                context.log.info(
                    f"{registered}: no request log of v{champion} and no batch scores by it "
                    "yet; materialize the predictions asset first"
                )
                return
            origin, table, prediction_column = recent
            version, reference_note = reference_version(
                lake, mlflow, registered, champion, tenant.name, spec.name
            )
            df = lake.read(tenant.name, "training_sets", spec.name, version).to_pandas()
            train = df[df["split"] == "train"]
            cols = feature_columns(df, spec.labels.entity_columns, spec.labels.label_column)
            model = load_verified(mlflow, registered, champion, recorded)
            reference_scores = model.predict_proba(train[cols].astype("float64"))[:, 1]

            compared = {n: k for n, k in kinds.items() if n in cols}
            current = _columns(table, [*compared, prediction_column], f"{origin} of {registered}")
            reference = {n: train[n].to_numpy() for n in compared}
            results = compare(reference, current, compared, monitoring.bins)
            score = compare_numeric(
                PREDICTION, reference_scores, current[prediction_column], monitoring.bins
            )
            rows = [r.row() for r in [*results, score]]
            snapshot = lake.write(tenant.name, "drift", spec.name, pa.Table.from_pylist(rows))

        by_name = {r.name: r for r in results}
        check_results = [
            _check_result(
                feature_check(name),
                by_name.get(name),
                monitoring,
                f"{name} is not a feature of the training set @{version} that the champion "
                f"v{champion} is compared with",
            )
            for name in features
        ]
        check_results.append(
            _check_result(PREDICTION_CHECK, score, monitoring, "", prediction=True)
        )
        drifted = [c.check_name for c in check_results if not c.passed]
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(snapshot.version),
            metadata={
                "uri": snapshot.uri,
                "registered_model": registered,
                "champion_version": champion,
                "recent_from": origin,
                "recent_rows": table.num_rows,
                "window_days": monitoring.window_days,
                "reference": reference_note,
                "reference_rows": len(train),
                "drifted_checks": dg.MetadataValue.json(drifted),
                "score_psi": score.psi if score.psi is not None else float("nan"),
                "statistics": dg.MetadataValue.md(_table([*results, score])),
                "plot_psi": dg.MetadataValue.md(
                    _summary_plot(
                        [*results, score], monitoring.thresholds.psi, f"{registered}: PSI"
                    )
                ),
                **usage.metadata(pricing.catalog()),
            },
            check_results=check_results,
        )

    return drift
