"""Budget alerts.

`budget_sensor` warns once per tenant, month and level (80% warning, 100% over budget): a log
line on the tick, an observation on `<tenant>/cost` in the UI, and a JSON post to
MLPLAT_ALERT_WEBHOOK when that is set. Runs of an over-budget tenant are refused by the run
coordinator (coordinator.py), whatever launched them: automation, sensors, the UI.

Each tick first bills the steps whose process was killed before it billed itself
(`reconcile.py`), so a tenant's spend includes them before its budget is judged.
"""

import json
import os
import urllib.request
from dataclasses import asdict

import dagster as dg

from platform_assets.cost.budget import BudgetStatus, budget_status
from platform_assets.cost.reconcile import reconcile
from platform_assets.tenancy.catalog import defs_root
from platform_assets.tenancy.locations import tenant_folders

WEBHOOK_ENV = "MLPLAT_ALERT_WEBHOOK"


def alert_payload(status: BudgetStatus) -> dict:
    return {
        "source": "mlplat",
        "kind": "budget",
        **asdict(status),
        "level": status.level,
        "fraction": round(status.fraction, 4),
        "blocked": status.blocked,
        "text": status.message,
    }


def post_alert(url: str, status: BudgetStatus, timeout: float = 5.0) -> int:
    """POST the alert as JSON; an unreachable or failing webhook raises (the tick retries)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(alert_payload(status)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Bill steps killed before they billed themselves, then warn when a tenant reaches its "
        "budget's warning threshold or spends all of it."
    ),
)
def budget_sensor(context: dg.SensorEvaluationContext):
    reconciled = reconcile(context.instance)
    for step in reconciled.billed:
        context.log.warning(
            f"billed killed step {step.step_key} of run {step.run_id} to tenant {step.tenant}: "
            f"{step.wall_seconds:.1f} s to {step.ended_by}, ${step.usd:.6f}"
        )
    for reason in reconciled.refused:
        context.log.warning(f"killed step not billed: {reason}")
    alerted: dict[str, str] = json.loads(context.cursor or "{}")
    webhook = os.environ.get(WEBHOOK_ENV)
    lines = []
    # Budgets are the platform's (limits.yaml): no tenant folder is parsed, so one that fails to
    # load is still checked.
    for name in tenant_folders(defs_root().resolve()):
        status = budget_status(context.instance, name)
        if status.level == "ok":
            continue
        lines.append(status.message)
        mark = f"{status.month}:{status.level}"
        if alerted.get(name) == mark:
            continue
        context.log.warning(status.message)
        context.instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=[name, "cost"],
                metadata={
                    "budget/level": status.level,
                    "budget/spent_usd": round(status.spent_usd, 6),
                    "budget/monthly_usd": status.budget_usd,
                    "budget/blocked": status.blocked,
                    "budget/message": status.message,
                },
            )
        )
        if webhook:
            post_alert(webhook, status)
        alerted[name] = mark
        context.update_cursor(json.dumps(alerted))
    return dg.SkipReason("; ".join(lines) or "every tenant is within its budget")
