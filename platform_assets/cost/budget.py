"""Month-to-date spend of a tenant against its platform-set budget, and what that allows.

Budgets are the platform's (platform_assets/limits/limits.yaml via `limits_for`), never read from
the tenant's own YAML.

`budget_status` is the one place the rule lives; the run coordinator (every launch path), the
budget sensor, the step-start refusal in `meter` and any other sensor (e.g. promotion) ask it and
use its message verbatim. Spend comes from the incrementally maintained ledger (`ledger.py`), so
a check costs the same whether the month holds ten steps or a million.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import dagster as dg

from platform_assets.cost.ledger import month_to_date
from platform_assets.tenancy.limits import LIMITS_PATH, TenantLimits, limits_for

_WHERE = f"{LIMITS_PATH.parent.name}/{LIMITS_PATH.name}"

Level = Literal["ok", "warn", "over"]


@dataclass(frozen=True)
class BudgetStatus:
    tenant: str
    month: str
    spent_usd: float
    budget_usd: float
    warn_at: float
    override: bool

    @property
    def fraction(self) -> float:
        return self.spent_usd / self.budget_usd

    @property
    def level(self) -> Level:
        if self.fraction >= 1:
            return "over"
        return "warn" if self.fraction >= self.warn_at else "ok"

    @property
    def blocked(self) -> bool:
        """New runs are not launched: budget spent and no override in the platform's limits."""
        return self.level == "over" and not self.override

    @property
    def message(self) -> str:
        head = (
            f"tenant {self.tenant!r} has spent ${self.spent_usd:,.2f} of its "
            f"${self.budget_usd:,.2f} monthly budget for {self.month} ({self.fraction:.0%})"
        )
        if self.level == "ok":
            return head
        if self.level == "warn":
            return f"{head}: above the {self.warn_at:.0%} warning threshold"
        if self.override:
            return f"{head}: over budget, runs continue because {_WHERE} sets budget.override"
        return (
            f"{head}: over budget, new runs are not launched until next month "
            f"or until the platform team sets budget.override: true in {_WHERE}"
        )


def budget_status(
    instance: dg.DagsterInstance,
    tenant: str,
    limits: TenantLimits | None = None,
    now: datetime | None = None,
) -> BudgetStatus:
    """Month-to-date spend of `tenant` (UTC month of `now`, up to `now`) vs its budget."""
    budget = (limits or limits_for(tenant)).budget
    month = (now or datetime.now(UTC)).strftime("%Y-%m")
    spent = month_to_date(instance, tenant, month, before=now.timestamp() if now else None)
    return BudgetStatus(
        tenant=tenant,
        month=month,
        spent_usd=spent,
        budget_usd=budget.monthly_usd,
        warn_at=budget.warn_at,
        override=budget.override,
    )


def run_start_status(
    instance: dg.DagsterInstance, tenant: str, run_id: str, limits: TenantLimits | None = None
) -> BudgetStatus | None:
    """The budget as it stood when the run started, so a run already going is never cut off."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    started = record.start_time or record.create_timestamp.timestamp()
    return budget_status(instance, tenant, limits, now=datetime.fromtimestamp(started, UTC))


def over_budget_skip(instance: dg.DagsterInstance, tenant: str) -> dg.SkipReason | None:
    """For sensors and schedules: a SkipReason naming the budget when the tenant is blocked."""
    status = budget_status(instance, tenant)
    return dg.SkipReason(status.message) if status.blocked else None


def filter_run_requests(
    instance: dg.DagsterInstance, requests: list[dg.RunRequest]
) -> tuple[list[dg.RunRequest], list[str]]:
    """Drop requests (by their `tenant` tag) for blocked tenants; returns (kept, reasons)."""
    kept, reasons, cache = [], [], {}
    for request in requests:
        tenant = request.tags.get("tenant")
        if tenant is None:
            kept.append(request)
            continue
        if tenant not in cache:
            cache[tenant] = budget_status(instance, tenant)
        status = cache[tenant]
        if status.blocked:
            reasons.append(status.message)
        else:
            kept.append(request)
    return kept, list(dict.fromkeys(reasons))
