"""The deployment's governance outside Dagster runs: what the CLI, the gateway and the demo act
through, and the audit chains checked against the heads published in Dagster."""

from __future__ import annotations

import os

import dagster as dg

from platform_assets.env import dagster_home, deployment
from platform_assets.governance.audit import PLATFORM_AUDIT_KEY
from platform_assets.governance.heads import audit_asset_keys, head_file, published_heads
from platform_assets.governance.workflow import Governance, governance_for, open_store
from platform_assets.resources.deployment import resources_for


def dagster_instance() -> dg.DagsterInstance:
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))
    return dg.DagsterInstance.get()


def deployment_governance() -> Governance:
    """The deployment's Governance, with audit records also reported to the Dagster instance."""

    instance = dagster_instance()
    mlflow = resources_for(deployment())["mlflow"]
    return governance_for(mlflow, instance, emit=instance.report_runless_asset_event)


def verification():
    """The platform DB's chains checked against the heads published in Dagster and the file."""
    instance = dagster_instance()
    # The tenants are those whose heads Dagster holds (the platform's own records), not the
    # folders there are today: a deleted tenant's chain is still checked against its heads.
    keys = [*audit_asset_keys(instance), PLATFORM_AUDIT_KEY]
    heads = published_heads(instance, keys, head_file())
    store = open_store()
    try:
        return store.verify(heads)
    finally:
        store.dispose()
