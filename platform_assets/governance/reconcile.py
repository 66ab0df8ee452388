"""Reconciliation: does MLflow's `champion` alias still point where the platform says?

The platform database is the source of truth for champions; MLflow's aliases only mirror it, and
anyone with EDIT on a registered model could move one. Drift is flagged twice: the asset check
`champion_alias` on every model asset (runs with the model, and from the UI), and the sensor
`champion_alias_reconciliation`, which records each new drift (and its resolution) in the
tenant's audit chain and reports the check's result so the UI shows it. Scoring and serving never
follow a drifted alias: they resolve the champion from the platform's state (`champion_of`).
"""

from __future__ import annotations

import json

import dagster as dg

from platform_assets.governance.identity import RECONCILER_IDENTITY, Identity
from platform_assets.governance.workflow import governance_for, open_store
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.tenancy.assets import Placement, step_op_tags
from platform_assets.tenancy.limits import effective_resources
from platform_assets.tenancy.specs import TenantSpec

CHECK = "champion_alias"


def champion_of(name: str) -> int | None:
    """The champion version of `name` in the platform's state."""
    store = open_store()
    try:
        return store.champions_all().get(name)
    finally:
        store.dispose()


def champion_artifact(name: str) -> tuple[int, str | None] | None:
    """The champion version of `name` in the platform's state and the artifact hash it was
    promoted on (None when none was recorded), or None without a champion."""
    store = open_store()
    try:
        return store.champion_artifacts().get(name)
    finally:
        store.dispose()


def champion_training_set(name: str) -> tuple[int, str | None] | None:
    """The champion version of `name` in the platform's state and the training-set snapshot it
    was trained on, as its promotion evidence recorded it from the platform's model
    materialization (None when no evidence names one), or None without a champion. Never
    MLflow's `training_set_version` tag, which anyone with EDIT on the model could change."""
    store = open_store()
    try:
        found = store.champion_evidence().get(name)
    finally:
        store.dispose()
    if found is None:
        return None
    version, evidence = found
    return version, evidence.get("training_set_version")


def drift(mlflow: MlflowResource, name: str, platform: int | None) -> str | None:
    """Why MLflow's `champion` alias disagrees with the platform's champion, or None."""
    alias = mlflow.version_by_alias(name, "champion")
    mirrored = int(alias.version) if alias is not None else None
    if mirrored == platform:
        return None
    said = f"v{mirrored}" if mirrored is not None else "nothing"
    truth = f"v{platform}" if platform is not None else "no champion"
    return (
        f"MLflow alias {name}@champion points at {said} but the platform's champion is {truth}; "
        "scoring and serving use the platform's"
    )


def alias_check(
    tenant: TenantSpec, model: str, placement: Placement | None = None
) -> dg.AssetChecksDefinition:
    """The `champion_alias` check of one model asset, a step of the model's tenant."""
    name = f"{tenant.name}.{model}"
    path = ["models", model]

    @dg.asset_check(
        asset=dg.AssetKey([tenant.name, *path]),
        name=CHECK,
        description="MLflow's champion alias points at the platform's champion.",
        op_tags=step_op_tags(
            tenant, effective_resources(tenant.name, tenant.resources), path, placement
        ),
    )
    def champion_alias(mlflow: MlflowResource) -> dg.AssetCheckResult:
        platform = champion_of(name)
        found = drift(mlflow, name, platform)
        return dg.AssetCheckResult(
            passed=found is None,
            severity=dg.AssetCheckSeverity.ERROR,
            description=found or f"{name}@champion matches the platform",
            metadata={"platform_champion": platform if platform is not None else 0},
        )

    return champion_alias


def reconcile(gov, mlflow: MlflowResource, seen: dict[str, str], report) -> tuple[dict, list]:
    """Compare every model; record new drift and resolutions. Returns the new seen-drift map and
    what was found, one line per model that drifted or recovered."""
    reconciler = Identity(RECONCILER_IDENTITY, "platform")
    champions = gov.store.champions_all()
    now, lines = {}, []
    for tenant, catalog in sorted(gov.catalogs.items()):
        for model in sorted(catalog.models):
            name = f"{tenant}.{model}"
            found = drift(mlflow, name, champions.get(name))
            if found is not None:
                now[name] = found
            if found == seen.get(name):
                continue
            outcome = "drift" if found else "resolved"
            reason = found or f"MLflow alias {name}@champion matches the platform again"
            gov.record(name, reconciler, "reconcile", outcome, reason)
            report(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey([tenant, "models", model]),
                    check_name=CHECK,
                    passed=found is None,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=reason,
                )
            )
            lines.append(f"{name}: {reason}")
    return now, lines


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Flag MLflow champion aliases that drifted from the platform's champions.",
)
def champion_alias_reconciliation(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    gov = governance_for(mlflow, context.instance, emit=context.instance.report_runless_asset_event)
    try:
        seen, lines = reconcile(
            gov,
            mlflow,
            json.loads(context.cursor or "{}"),
            context.instance.report_runless_asset_event,
        )
    finally:
        gov.close()
    context.update_cursor(json.dumps(seen, sort_keys=True))
    return dg.SkipReason("; ".join(lines) or "every champion alias matches the platform")
