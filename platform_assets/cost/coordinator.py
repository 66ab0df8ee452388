"""The run queue that refuses an over-budget tenant's run before it starts, on every launch path.

Every run Dagster submits (UI, GraphQL, sensors, schedules, backfills) passes the instance's run
coordinator; this one asks `budget_status` for each tenant the run touches (its `tenant` tag and
the tenants of the assets it selects) and fails the run with the budget's message, which the UI
shows on the run, instead of queueing it.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

PLATFORM = "platform"


def run_tenants(run: dg.DagsterRun) -> list[str]:
    """The tenants a run spends for: its tag and the tenants owning the assets it selects."""
    tenants = {run.tags["tenant"]} if run.tags.get("tenant") else set()
    keys = [*(run.asset_selection or ()), *(c.asset_key for c in run.asset_check_selection or ())]
    tenants |= {key.path[0] for key in keys if key.path[0] != PLATFORM}
    return sorted(tenants)


class BudgetRunCoordinator(QueuedRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        from platform_assets.cost.budget import budget_status

        run = context.dagster_run
        if run.status == dg.DagsterRunStatus.NOT_STARTED:
            for tenant in run_tenants(run):
                status = budget_status(self._instance, tenant)
                if status.blocked:
                    self._instance.report_run_failed(run, f"Refused before start: {status.message}")
                    return self._instance.get_run_by_id(run.run_id)
        return super().submit_run(context)
