"""The promotion job: points the MLflow alias `champion` at a model version."""

import dagster as dg

from resources.mlflow import MlflowResource


class PromoteConfig(dg.Config):
    registered_model: str
    version: int
    tenant: str
    asset_key: str
    reason: str = ""


@dg.op(description="Set the `champion` alias on the given model version (aliases, not stages).")
def set_champion(context: dg.OpExecutionContext, config: PromoteConfig, mlflow: MlflowResource):
    client = mlflow.client()
    previous = mlflow.version_by_alias(config.registered_model, "champion")
    client.set_registered_model_alias(config.registered_model, "champion", str(config.version))
    context.log_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey.from_user_string(config.asset_key),
            metadata={
                "event": "promoted",
                "alias": "champion",
                "registered_model": config.registered_model,
                "version": config.version,
                "previous_champion": int(previous.version) if previous else 0,
                "reason": config.reason,
            },
        )
    )


@dg.job(tags={"asset_type": "model"}, description="Promote a model version to champion.")
def promote_model():
    set_champion()
