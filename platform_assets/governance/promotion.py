"""Promotion and rollback as Dagster jobs, launchable from the UI with typed config.

Both run the same `Governance` workflow as the sensor and the `mlplat` CLI. The acting identity
is `acting_as`, else the run tag `mlplat/launched_by`; in production the proxy in front of the UI
sets that tag from its SSO header (see docs/governance.md).
"""

import dagster as dg
from pydantic import Field

from resources.mlflow import MlflowResource


def _actor(context: dg.OpExecutionContext, acting_as: str) -> str:
    return acting_as or context.run.tags.get("mlplat/launched_by", "system")


class PromoteConfig(dg.Config):
    registered_model: str = Field(description="'<tenant>.<model>', as registered in MLflow")
    version: int = Field(ge=1, description="MLflow model version to submit")
    acting_as: str = Field(default="", description="Identity; default: run tag mlplat/launched_by")
    reason: str = Field(default="", description="Why, for the audit trail")


class RollbackConfig(dg.Config):
    registered_model: str = Field(description="'<tenant>.<model>', as registered in MLflow")
    acting_as: str = Field(default="", description="Identity; default: run tag mlplat/launched_by")
    reason: str = Field(description="Why, for the audit trail")


@dg.op(
    description="Check the version against its policy, alias it `challenger` and open its "
    "approval requests; it becomes `champion` once the production approvals are in."
)
def submit_candidate(
    context: dg.OpExecutionContext, config: PromoteConfig, mlflow: MlflowResource
) -> None:
    from platform_assets.governance.workflow import governance_for

    gov = governance_for(mlflow, context.instance, emit=context.log_event)
    try:
        outcome = gov.propose(
            config.registered_model,
            config.version,
            _actor(context, config.acting_as),
            config.reason,
        )
    finally:
        gov.close()
    context.log.info(outcome.message)


@dg.op(description="Move `champion` back to the `previous` version.")
def roll_back(context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MlflowResource):
    from platform_assets.governance.workflow import governance_for

    gov = governance_for(mlflow, context.instance, emit=context.log_event)
    outcome = gov.rollback(
        config.registered_model, _actor(context, config.acting_as), config.reason
    )
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
