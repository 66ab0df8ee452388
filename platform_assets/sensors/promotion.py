"""Submits newly evaluated model versions that meet their promotion policy.

Reads evaluation-report materializations after its cursor (event storage id) and assesses each
version with the same `Governance.assess` the promotion job re-runs: thresholds, the required
checks' latest evaluations on the model's training set and feature views, and the minimum
improvement over the champion. Each qualifying version becomes a `promote_model` run with run key
`promote:<model>:<version>`, so no version is submitted twice. A tenant over its budget gets no
promotion run (the tick says why, in the budget's words); the cursor stays before its version so
it is submitted once the budget allows (next month, or an override in the platform's limits.yaml).
"""

import dagster as dg

from platform_assets.governance.promotion import promote_model
from resources.mlflow import MlflowResource


def evaluation_keys(instance: dg.DagsterInstance) -> list[dg.AssetKey]:
    """Every tenant's evaluation reports (`<tenant>/evaluation_reports/<model>`) the instance
    has records of. From the instance, not the sensor's repository: the platform location holds
    no tenant's assets, and only a tenant's own location can materialize keys under its name."""
    return sorted(
        (
            k
            for k in instance.get_asset_keys()
            if len(k.path) == 3 and k.path[1] == "evaluation_reports"
        ),
        key=lambda k: k.to_user_string(),
    )


def _candidates(gov, context: dg.SensorEvaluationContext, cursor: int):
    """(storage id, run request) for evaluated versions after `cursor` that meet policy, the
    reasons for the others, and the newest storage id seen."""
    from platform_assets.governance.workflow import SENSOR_IDENTITY

    newest, requests, reasons = cursor, [], []
    for key in evaluation_keys(context.instance):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor),
            limit=100,
            ascending=True,
        ).records
        for record in records:
            newest = max(newest, record.storage_id)
            md = record.asset_materialization.metadata
            name, version = md["registered_model"].value, int(md["model_version"].value)
            if gov.submitted(name, version):
                reasons.append(f"{name} v{version}: already submitted")
                continue
            assessment = gov.assess(name, version, gov.champion(name))
            if not assessment.ok:
                reasons.append(f"{name} v{version}: {assessment.why}")
                continue
            config = {
                "registered_model": name,
                "version": version,
                "acting_as": SENSOR_IDENTITY,
                "reason": assessment.why,
            }
            requests.append(
                (
                    record.storage_id,
                    dg.RunRequest(
                        run_key=f"promote:{name}:{version}",
                        run_config={"ops": {"submit_candidate": {"config": config}}},
                        tags={
                            "tenant": key.path[0],
                            "mlplat/model": name,
                            "mlplat/version": str(version),
                        },
                    ),
                )
            )
    return requests, reasons, newest


# By name: a sensor holding the job object is rebuilt when Definitions binds the job's resources,
# and that rebuild warns about the sensor's (beta) owners on every load.
@dg.sensor(
    job_name=promote_model.name,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Submit evaluated models that meet their promotion policy for approval.",
)
def promotion_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    from platform_assets.cost.budget import filter_run_requests
    from platform_assets.governance.workflow import governance_for

    gov = governance_for(mlflow, context.instance)
    try:
        candidates, reasons, newest = _candidates(gov, context, int(context.cursor or 0))
    finally:
        gov.close()
    requests, over_budget = filter_run_requests(context.instance, [r for _, r in candidates])
    held = [storage_id for storage_id, r in candidates if r not in requests]
    context.update_cursor(str(min([newest, *[storage_id - 1 for storage_id in held]])))
    reasons += over_budget
    if not requests:
        return dg.SkipReason("; ".join(reasons) or "no new evaluation reports")
    return requests
