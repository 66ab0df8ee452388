"""Promotion and rollback as Dagster jobs, launchable from the UI with typed config.

Both run the same `Governance` workflow as the sensor and the `mlplat` CLI. Who acts comes from
`identity.job_identity`: the promotion sensor by the proof it signs into its run requests, a
person by the run tags the UI gateway signs from the proxy's or the ID token's identity; the
self-asserted `acting_as` and bare `mlplat/launched_by` tag count only with MLPLAT_ENV=local.
"""

import dagster as dg
from pydantic import Field

from platform_assets.governance.identity import IdentityRefused, job_identity
from platform_assets.governance.keys import audit_keys
from platform_assets.governance.workflow import governance_for
from platform_assets.resources.mlflow import MlflowResource

LAUNCHED_BY = "mlplat/launched_by"


def _actor(context: dg.OpExecutionContext, config, gov, action: str, model: str, version=None):
    """The run's verified identity; a refusal is recorded in the audit trail, then raised."""
    try:
        return job_identity(
            audit_keys(),
            context.run.tags,
            context.run.job_name,
            context.run.run_config,
            config.acting_as,
            getattr(config, "sensor_proof", ""),
            model if version is not None else "",
            version or 0,
            context.run.parent_run_id or "",
        )
    except IdentityRefused as exc:
        claims = {"acting_as": config.acting_as, "launched_by": context.run.tags.get(LAUNCHED_BY)}
        gov.refuse_identity(
            exc,
            action,
            via=f"job {context.run.job_name}",
            model=model,
            version=version,
            claimed=", ".join(f"{k}={v}" for k, v in claims.items() if v),
            details={"run_id": context.run_id},
        )
        raise


class PromoteConfig(dg.Config):
    registered_model: str = Field(description="'<tenant>.<model>', as registered in MLflow")
    version: int = Field(ge=1, description="MLflow model version to submit")
    acting_as: str = Field(
        default="", description="Identity (MLPLAT_ENV=local only; else the verified launcher)"
    )
    reason: str = Field(default="", description="Why, for the audit trail")
    sensor_proof: str = Field(default="", description="Set by the promotion sensor only")


class RollbackConfig(dg.Config):
    registered_model: str = Field(description="'<tenant>.<model>', as registered in MLflow")
    acting_as: str = Field(
        default="", description="Identity (MLPLAT_ENV=local only; else the verified launcher)"
    )
    reason: str = Field(description="Why, for the audit trail")


@dg.op(
    description="Check the version against its policy, alias it `challenger` and open its "
    "approval requests; it becomes `champion` once the production approvals are in."
)
def submit_candidate(
    context: dg.OpExecutionContext, config: PromoteConfig, mlflow: MlflowResource
) -> None:
    gov = governance_for(mlflow, context.instance, emit=context.log_event)
    try:
        actor = _actor(context, config, gov, "propose", config.registered_model, config.version)
        outcome = gov.propose(config.registered_model, config.version, actor, config.reason)
    finally:
        gov.close()
    context.log.info(outcome.message)


@dg.op(description="Move `champion` back to the `previous` version.")
def roll_back(context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MlflowResource):
    gov = governance_for(mlflow, context.instance, emit=context.log_event)
    try:
        actor = _actor(context, config, gov, "rollback", config.registered_model)
        outcome = gov.rollback(config.registered_model, actor, config.reason)
    finally:
        gov.close()
    context.log.info(outcome.message)


# One small op each: run it in the launching process instead of spawning a step process.
@dg.job(
    tags={"asset_type": "model"},
    executor_def=dg.in_process_executor,
    description="Submit a model version for promotion: policy check, `challenger`, approvals.",
)
def promote_model():
    submit_candidate()


@dg.job(
    tags={"asset_type": "model"},
    executor_def=dg.in_process_executor,
    description="Roll a model's champion back to `previous`.",
)
def rollback_model():
    roll_back()
