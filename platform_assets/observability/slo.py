"""Tenants' SLOs (`slos:` in their tenant YAML): Dagster freshness policies, attainment and error
budgets, and the platform's SLO report asset."""

import base64
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.tenancy.automation import own_freshness
from platform_assets.tenancy.catalog import PlatformConfigError, defs_root, load_tenant
from platform_assets.tenancy.runs import attributed_tenant, claim_run
from platform_assets.tenancy.specs import FreshnessSlo

if TYPE_CHECKING:
    from platform_assets.tenancy.catalog import TenantCatalog

# One tenant's assets as its code location builds them (the composition root passes its own
# `tenant_assets`): freshness policies are read from the definitions themselves.
TenantAssets = Callable[["TenantCatalog"], Iterable[dg.AssetsDefinition]]
SLO_REPORT_KEY = dg.AssetKey(["platform", "slo", "report"])
PAGE = 1000  # run records read at a time
slo_report_job = dg.define_asset_job(
    "slo_report", selection=[SLO_REPORT_KEY], tags={"tenant": "platform"}
)
# Hourly: the freshness attainment moves with the clock, not only when runs finish.
slo_report_schedule = dg.ScheduleDefinition(
    job=slo_report_job,
    cron_schedule="7 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Recomputes the SLO report every hour.",
)


def freshness_policies(
    catalog: "TenantCatalog", tenant_assets: TenantAssets
) -> dict[dg.AssetKey, FreshnessSlo]:
    """Each of the tenant's assets that has a freshness policy, with the SLO it comes from.

    Read from the asset definitions themselves, so it is exactly the assets `asset_kwargs` gave
    a policy to, whatever their keys: an asset's own `freshness` target, else its type's."""
    slos = catalog.tenant.slos.freshness
    own = own_freshness(catalog)
    found: dict[dg.AssetKey, FreshnessSlo] = {}
    for assets_def in tenant_assets(catalog):
        for spec in assets_def.specs:
            if spec.freshness_policy is not None:
                found[spec.key] = own.get(spec.key) or slos[spec.tags["asset_type"]]
    return found


def stale_seconds(
    materialized: Sequence[float], before: float | None, start: float, end: float, fail_after: float
) -> float:
    """Seconds of [start, end) during which the asset's last materialization was older than
    `fail_after` seconds. `materialized` are the timestamps inside the window (ascending),
    `before` the last one before it (None if none: stale until the first)."""
    stale = 0.0
    last = before
    for t in [*materialized, end]:
        t = min(max(t, start), end)
        # Between `last` and `t` the age grows from 0; it is stale past last + fail_after.
        stale_from = start if last is None else max(start, last + fail_after)
        stale += max(0.0, t - stale_from)
        last = t
    return stale


@dataclass(frozen=True)
class SloResult:
    tenant: str
    slo: str  # "run_success" or "freshness:<asset key>"
    target: float
    attainment: float | None  # None: nothing to measure in the window (no finished runs)
    window_days: float
    detail: str

    @property
    def error_budget_remaining(self) -> float | None:
        """1 = untouched, 0 = spent, below 0 = overspent (the SLO is missed)."""
        if self.attainment is None:
            return None
        return 1 - (1 - self.attainment) / (1 - self.target)

    @property
    def met(self) -> bool | None:
        return None if self.attainment is None else self.attainment >= self.target


@dataclass(frozen=True)
class FinishedRun:
    tenant: str | None  # `attributed_tenant`: None when no code location launched it
    status: dg.DagsterRunStatus
    updated: datetime


def finished_runs(instance: dg.DagsterInstance, since: datetime) -> list[FinishedRun]:
    """Runs that succeeded or failed since `since`, each with the tenant it counts for: the
    tenant of the code location that launched it, never its `tenant` tag (a launcher's claim)."""
    out: list[FinishedRun] = []
    cursor = None
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
                updated_after=since,
            ),
            limit=PAGE,
            cursor=cursor,
        )
        for record in records:
            run = record.dagster_run
            updated = record.update_timestamp.replace(tzinfo=UTC)
            out.append(FinishedRun(attributed_tenant(run), run.status, updated))
        if len(records) < PAGE:
            return out
        cursor = records[-1].dagster_run.run_id


def run_success(
    instance: dg.DagsterInstance,
    catalog: "TenantCatalog",
    now: datetime,
    runs: list[FinishedRun] | None = None,
) -> SloResult:
    """The share of the tenant's finished runs in its window that succeeded. `runs` (from
    `finished_runs`, reaching at least as far back) saves reading them once per tenant."""
    slo = catalog.tenant.slos.run_success
    since = now - timedelta(days=slo.window_days)
    if runs is None:
        runs = finished_runs(instance, since)
    counts = {dg.DagsterRunStatus.SUCCESS: 0, dg.DagsterRunStatus.FAILURE: 0}
    for run in runs:
        if run.tenant == catalog.tenant.name and run.updated > since:
            counts[run.status] += 1
    ok, failed = counts[dg.DagsterRunStatus.SUCCESS], counts[dg.DagsterRunStatus.FAILURE]
    return SloResult(
        tenant=catalog.tenant.name,
        slo="run_success",
        target=slo.target,
        attainment=ok / (ok + failed) if ok + failed else None,
        window_days=slo.window_days,
        detail=f"{ok} succeeded, {failed} failed",
    )


def freshness(
    instance: dg.DagsterInstance, tenant: str, key: dg.AssetKey, slo: FreshnessSlo, now: datetime
) -> SloResult:
    end = now.timestamp()
    start = end - slo.window_days * 86400
    inside, cursor = [], None
    while True:  # Dagster returns at most 10,000 records a call
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_timestamp=start),
            limit=10000,
            cursor=cursor,
            ascending=True,
        )
        inside.extend(page.records)
        if not page.has_more:
            break
        cursor = page.cursor
    earlier = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, before_timestamp=start), limit=1, ascending=False
    ).records
    stale = stale_seconds(
        [r.timestamp for r in inside],
        earlier[0].timestamp if earlier else None,
        start,
        end,
        slo.fail_after_hours * 3600,
    )
    return SloResult(
        tenant=tenant,
        slo=f"freshness:{key.to_user_string()}",
        target=slo.target,
        attainment=1 - stale / (end - start),
        window_days=slo.window_days,
        detail=f"{len(inside)} materializations, stale {stale / 3600:.1f} h "
        f"(fails after {slo.fail_after_hours:g} h)",
    )


def tenant_slos(
    instance: dg.DagsterInstance,
    catalog: "TenantCatalog",
    now: datetime,
    assets: TenantAssets,
    runs: list[FinishedRun] | None = None,
):
    yield run_success(instance, catalog, now, runs)
    for key, slo in freshness_policies(catalog, assets).items():
        yield freshness(instance, catalog.tenant.name, key, slo, now)


def slo_plot(results: list[SloResult]) -> str:
    """Attainment against target and error budget left per SLO, as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if r.attainment is not None]
    labels = [f"{r.tenant} {r.slo}" for r in measured]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 0.6 + 0.35 * max(len(measured), 1)), sharey=True
    )
    colors = ["tab:blue" if r.met else "tab:red" for r in measured]
    left.barh(labels, [r.attainment * 100 for r in measured], color=colors)
    left.scatter([r.target * 100 for r in measured], labels, color="black", marker="|", s=200)
    left.set_xlim(max(0, min([r.attainment * 100 for r in measured] + [90]) - 1), 100)
    left.set_title("Attainment, % (| = target)")
    right.barh(labels, [r.error_budget_remaining * 100 for r in measured], color=colors)
    right.axvline(0, color="red")
    right.set_title("Error budget left, %")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"![slo attainment](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def _table(results: list[SloResult]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.2f}%"

    rows = ["| tenant | SLO | window | target | attained | budget left | detail |"]
    rows.append("|---|---|---:|---:|---:|---:|---|")
    rows += [
        f"| {r.tenant} | {r.slo} | {r.window_days:g} d | {pct(r.target)} | {pct(r.attainment)} "
        f"| {pct(r.error_budget_remaining)} | {r.detail} |"
        for r in results
    ]
    return "\n".join(rows)


def slo_report_asset(tenants: list[str], tenant_assets: TenantAssets) -> dg.AssetsDefinition:
    """The platform's SLO report. Like the showback it names tenants by folder; it reads each
    tenant's YAML when it runs and reports one that does not load instead of failing them all."""

    @dg.asset(
        key=SLO_REPORT_KEY,
        group_name="platform",
        owners=["team:platform"],
        tags={"asset_type": "slo_report", "tenant": "platform"},
        kinds={"python"},
        description=(
            "SLO attainment per tenant: run success over each tenant's window and the share of "
            "time each asset with a freshness policy was fresh, with the error budget left "
            "(from the tenants' `slos:` YAML and the Dagster instance)."
        ),
    )
    def slo_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        claim_run("platform")
        now = datetime.now(UTC)
        root = defs_root().resolve()
        results: list[SloResult] = []
        unloaded: list[str] = []
        catalogs = []
        for name in sorted(tenants):
            try:
                catalogs.append(load_tenant(root / name))
            except PlatformConfigError as exc:
                context.log.warning(f"SLOs of tenant {name} not reported: {exc}")
                unloaded.append(f"{name}: {exc}")
        # One read of the finished runs, as far back as the longest window.
        days = max((c.tenant.slos.run_success.window_days for c in catalogs), default=0)
        runs = finished_runs(context.instance, now - timedelta(days=days))
        for catalog in catalogs:
            results.extend(tenant_slos(context.instance, catalog, now, tenant_assets, runs))
        missed = [r for r in results if r.met is False]
        metadata: dict = {
            "slos": len(results),
            "missed": len(missed),
            "missed_slos": ", ".join(f"{r.tenant} {r.slo}" for r in missed) or "none",
            "report": dg.MetadataValue.md(_table(results)),
            "results": dg.MetadataValue.json(
                [
                    {
                        "tenant": r.tenant,
                        "slo": r.slo,
                        "target": r.target,
                        "attainment": r.attainment,
                        "error_budget_remaining": r.error_budget_remaining,
                        "window_days": r.window_days,
                        "detail": r.detail,
                    }
                    for r in results
                ]
            ),
            "tenants_not_loaded": dg.MetadataValue.md("\n".join(unloaded) or "none"),
        }
        if any(r.attainment is not None for r in results):
            metadata["plot"] = dg.MetadataValue.md(slo_plot(results))
        return dg.MaterializeResult(metadata=metadata)

    return slo_report
