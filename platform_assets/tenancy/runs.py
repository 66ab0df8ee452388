"""Every run carries the `tenant` tag, and no run spans tenants, whatever launched it.

Two guards, because runs reach Dagster two ways. Runs submitted to the instance (UI, schedules,
sensors, automation, backfills) pass `TenantRunCoordinator` (dagster.yaml), which tags them from
what they materialize before they queue, so per-tenant run limits apply to them. Runs executed
directly (`dagster job execute`, `dagster asset materialize`, `materialize()`) start no queue:
each tenant step calls `claim_run` first, which tags an untagged run with the step's tenant and
fails a step of one tenant in a run tagged for another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

from platform_assets.tenancy.isolation import PLATFORM, IsolationError

TAG = "tenant"


def claim_run(tenant: str) -> None:
    """In a step of `tenant`: tag the run with it, or refuse a run tagged for another tenant."""
    context = dg.OpExecutionContext.get()
    # From storage, not `context.run`: an earlier step in this process may have just tagged it.
    run = context.instance.get_run_by_id(context.run_id)
    tagged = (run.tags if run is not None else context.run.tags).get(TAG)
    if tagged is None:
        context.instance.add_run_tags(context.run_id, {TAG: tenant})
    elif tagged != tenant:
        raise IsolationError(
            f"run {context.run_id} is tenant {tagged!r}'s; a step of tenant {tenant!r} "
            f"({context.op.name}) may not run in it: one run never spans tenants"
        )


def _config_tenant(run_config: Mapping[str, Any]) -> str | None:
    """The tenant a governance job acts on: its op config names `<tenant>.<model>`."""
    for op in (run_config.get("ops") or {}).values():
        model = ((op or {}).get("config") or {}).get("registered_model")
        if isinstance(model, str) and "." in model:
            return model.split(".", 1)[0]
    return None


def run_tenant(run: dg.DagsterRun) -> str:
    """The one tenant a run belongs to; IsolationError when it would span tenants."""
    if TAG in run.tags:
        return run.tags[TAG]
    keys = set(run.asset_selection or ()) | {c.asset_key for c in run.asset_check_selection or ()}
    tenants = sorted({k.path[0] for k in keys})
    if len(tenants) > 1:
        raise IsolationError(
            f"run {run.run_id} of {run.job_name} selects assets of tenants "
            f"{', '.join(tenants)}: one run never spans tenants; launch one run per tenant"
        )
    if tenants:
        return tenants[0]
    tenant = _config_tenant(run.run_config or {})
    if tenant:
        return tenant
    origin = run.remote_job_origin
    return origin.location_name if origin is not None else PLATFORM


class TenantRunCoordinator(QueuedRunCoordinator):
    """`QueuedRunCoordinator` that tags each run with its tenant before it queues."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if TAG not in run.tags:
            try:
                tenant = run_tenant(run)
            except IsolationError as exc:
                self._instance.report_run_failed(run, message=str(exc))
                return self._instance.get_run_by_id(run.run_id) or run
            self._instance.add_run_tags(run.run_id, {TAG: tenant})
            run = self._instance.get_run_by_id(run.run_id) or run
            context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)


def pipeline_job_name(tenant: str) -> str:
    """The job that runs a tenant's pipeline: every asset of its group but its cost."""
    return f"{tenant}_pipeline"


def pipeline_selection(tenant: str) -> dg.AssetSelection:
    return dg.AssetSelection.groups(tenant) - dg.AssetSelection.tag("asset_type", "cost")


def automation_sensor_name(tenant: str) -> str:
    return f"{tenant}_automation"
