"""Retraining on drift: a tenant's sensor that turns a failed drift check of a model whose YAML
says `monitoring.retrain_on_drift: true` into a run of the tenant's pipeline for that model's
lineage (sources, features, training set, model, evaluation report), tagged with the reason.

A sensor rather than an automation condition: the drift asset is downstream of the training
set, and a condition can only look at an asset's own checks and its dependencies'. The new
version is then judged and promoted like any other (promotion sensor, approvals).
"""

from __future__ import annotations

import json

import dagster as dg

from platform_assets.cost.budget import over_budget_skip
from platform_assets.monitoring.assets import PREDICTION_CHECK, feature_check, model_features
from platform_assets.tenancy.catalog import check_model_refs
from platform_assets.tenancy.runs import REASON_TAG, pipeline_job_name, pipeline_selection
from platform_assets.tenancy.specs import ModelSpec, TenantSpec


def drift_check_keys(tenant: str, spec: ModelSpec, features: list[str]) -> list[dg.AssetCheckKey]:
    key = dg.AssetKey([tenant, "drift", spec.name])
    names = [*(feature_check(f) for f in features), PREDICTION_CHECK]
    return [dg.AssetCheckKey(key, name) for name in names]


def retrain_sensor(
    tenant: TenantSpec, models: dict[str, list[dg.AssetCheckKey]]
) -> dg.SensorDefinition:
    """`models`: model name -> its drift check keys, for the models that retrain on drift."""

    @dg.sensor(
        name=f"{tenant.name}_drift_retrain",
        job_name=pipeline_job_name(tenant.name),
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains {tenant.name}'s models whose drift checks failed "
        "(monitoring.retrain_on_drift in their YAML).",
    )
    def drift_retrain(context: dg.SensorEvaluationContext):
        seen: dict[str, int] = json.loads(context.cursor or "{}")
        storage = context.instance.event_log_storage
        requests, latest = [], dict(seen)
        for model, keys in sorted(models.items()):
            records = storage.get_latest_asset_check_execution_by_key(keys)
            new = [r for r in records.values() if r.id > seen.get(model, 0)]
            if not new:
                continue
            latest[model] = max(r.id for r in new)
            failed = [r for r in new if r.evaluation is not None and not r.evaluation.passed]
            if not failed:
                continue
            reasons = "; ".join(
                r.evaluation.description or r.key.name
                for r in sorted(failed, key=lambda r: r.key.name)
            )
            eval_key = dg.AssetKey([tenant.name, "evaluation_reports", model])
            lineage = (
                dg.AssetSelection.assets(eval_key).upstream() & pipeline_selection(tenant.name)
            ).resolve(context.repository_def.asset_graph)
            requests.append(
                dg.RunRequest(
                    run_key=f"{model}:drift:{latest[model]}",
                    asset_selection=sorted(lineage, key=lambda k: k.to_user_string()),
                    tags={
                        "tenant": tenant.name,
                        # Tag values are capped; the run's checks hold the full story.
                        REASON_TAG: f"drift of {tenant.name}.{model}: {reasons}"[:1000],
                    },
                )
            )
        if requests:
            skip = over_budget_skip(context.instance, tenant.name)
            if skip is not None:
                return skip  # cursor kept: the request stands once the budget allows
        context.update_cursor(json.dumps(latest, sort_keys=True))
        if not requests:
            return dg.SkipReason("no new failed drift check")
        return requests

    return drift_retrain


def tenant_retrain_sensors(catalog) -> list[dg.SensorDefinition]:
    """The tenant's retrain sensor, when any of its models retrains on drift."""
    models = {
        spec.name: drift_check_keys(
            catalog.tenant.name, spec, list(model_features(spec, check_model_refs(catalog, spec)))
        )
        for spec in catalog.models.values()
        if spec.monitoring.retrain_on_drift
    }
    return [retrain_sensor(catalog.tenant, models)] if models else []
