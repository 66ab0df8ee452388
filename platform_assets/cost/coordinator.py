"""The run queue that refuses an over-budget tenant's run before it starts, on every launch path.

Every run Dagster submits (UI, GraphQL, sensors, schedules, backfills) passes the instance's run
coordinator. This one is the tenancy coordinator (each run tagged with its one tenant, see
tenancy/runs.py) that first asks `budget_status` for that tenant and fails the run with the
budget's message, which the UI shows on the run, instead of queueing it.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.run_coordinator import SubmitRunContext

from platform_assets.cost.budget import budget_status
from platform_assets.tenancy.isolation import PLATFORM, IsolationError
from platform_assets.tenancy.runs import TenantRunCoordinator, run_tenant


class BudgetRunCoordinator(TenantRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if run.status == dg.DagsterRunStatus.NOT_STARTED:
            try:
                tenant = run_tenant(run)
            except IsolationError:  # a run spanning tenants: the tenancy coordinator fails it
                tenant = PLATFORM
            if tenant != PLATFORM:
                status = budget_status(self._instance, tenant)
                if status.blocked:
                    self._instance.report_run_failed(run, f"Refused before start: {status.message}")
                    return self._instance.get_run_by_id(run.run_id)
        return super().submit_run(context)
