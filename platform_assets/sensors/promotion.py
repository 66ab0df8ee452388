"""Promotes a newly evaluated model version when it passes its thresholds and beats the champion.

Reads evaluation-report materializations after its cursor; each qualifying version becomes a
run of `promote_model` with run key `promote:<model>:<version>`, so no version is promoted twice.
"""

import dagster as dg

from platform_assets.governance.promotion import promote_model
from platform_assets.models.training import HIGHER_IS_BETTER
from resources.mlflow import MlflowResource


def evaluation_keys(repository_def) -> list[dg.AssetKey]:
    graph = repository_def.asset_graph
    return sorted(
        (
            k
            for k in graph.get_all_asset_keys()
            if graph.get(k).tags.get("asset_type") == "evaluation_report"
        ),
        key=lambda k: k.to_user_string(),
    )


def _policy(repository_def, key: dg.AssetKey) -> dict:
    return repository_def.asset_graph.get(key).metadata["policy"].value


def decide(metadata: dict, policy: dict, champion_value: float | None) -> tuple[bool, str]:
    """Whether an evaluated version should become champion, and why (or why not)."""
    metric = policy["primary_metric"]
    value = float(metadata["metrics"].value[metric])
    if not metadata["passes_thresholds"].value:
        return False, f"fails thresholds: {', '.join(metadata['failed_thresholds'].value)}"
    if champion_value is None:
        return True, f"first version to pass thresholds ({metric}={value:.4f})"
    gain = value - champion_value if HIGHER_IS_BETTER[metric] else champion_value - value
    needed = policy["promotion"]["min_improvement"]
    if gain <= needed:
        return False, (
            f"{metric}={value:.4f} does not beat champion {champion_value:.4f} "
            f"by more than {needed}"
        )
    return True, f"{metric}={value:.4f} beats champion {champion_value:.4f} by {gain:.4f}"


@dg.sensor(
    job=promote_model,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Promote evaluated models that pass their thresholds and beat the champion.",
)
def promotion_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    cursor = int(context.cursor or 0)
    newest = cursor
    requests, reasons = [], []
    for key in evaluation_keys(context.repository_def):
        policy = _policy(context.repository_def, key)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor),
            limit=100,
            ascending=True,
        ).records
        for record in records:
            newest = max(newest, record.storage_id)
            md = record.asset_materialization.metadata
            name, version = md["registered_model"].value, int(md["model_version"].value)
            champion = mlflow.version_by_alias(name, "champion")
            champion_value = None
            if champion is not None:
                if int(champion.version) == version:
                    reasons.append(f"{name} v{version}: already champion")
                    continue
                tag = champion.tags.get(f"eval_{policy['primary_metric']}")
                champion_value = float(tag) if tag is not None else None
            promote, why = decide(md, policy, champion_value)
            if not promote:
                reasons.append(f"{name} v{version}: {why}")
                continue
            tenant = key.path[0]
            requests.append(
                dg.RunRequest(
                    run_key=f"promote:{name}:{version}",
                    run_config={
                        "ops": {
                            "set_champion": {
                                "config": {
                                    "registered_model": name,
                                    "version": version,
                                    "tenant": tenant,
                                    "asset_key": dg.AssetKey(
                                        [tenant, "models", key.path[-1]]
                                    ).to_user_string(),
                                    "reason": why,
                                }
                            }
                        }
                    },
                    tags={"tenant": tenant, "mlplat/model": name, "mlplat/version": str(version)},
                )
            )
    context.update_cursor(str(newest))
    if not requests:
        return dg.SkipReason("; ".join(reasons) or "no new evaluation reports")
    return requests
