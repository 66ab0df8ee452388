"""Every series `mlplat metrics` serves (`ALL`), and those `mlplat serve` serves on its metrics
port (`SERVE`): name, type, help and labels, in one table.

The exporter builds its families from it, and the alerting rules and the Grafana dashboard are
generated from it (dashboards.py), so a renamed metric breaks the generator, not a dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Series:
    name: str  # the family name; counters' samples end in `_total`
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...]

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this family (what PromQL refers to)."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _s(name: str, kind: str, help: str, *labels: str) -> Series:
    return Series(f"mlplat_{name}", kind, help, ("tenant", *labels))


RUNS = _s("runs", "counter", "Finished runs by tenant, job and outcome", "job", "outcome")
RUNS_IN_PROGRESS = _s(
    "runs_in_progress", "gauge", "Runs queued or running now, by status", "status"
)
RUN_QUEUE_WAIT = _s(
    "run_queue_wait_seconds", "histogram", "From the run's creation (enqueued) to its start"
)
RUN_DURATION = _s("run_duration_seconds", "histogram", "From start to end of finished runs", "job")
STEP_DURATION = _s(
    "step_duration_seconds", "histogram", "Duration of succeeded steps", "job", "step"
)
STEP_FAILURES = _s("step_failures", "counter", "Failed steps", "job", "step")
CHECKS = _s(
    "asset_check_evaluations",
    "counter",
    "Asset check evaluations by outcome (passed: true/false) and severity",
    "asset",
    "check",
    "severity",
    "passed",
)
LAST_MATERIALIZATION = _s(
    "asset_last_materialization_timestamp_seconds",
    "gauge",
    "When an asset with a freshness policy last materialized (Unix time)",
    "asset",
)
FRESHNESS_LAG = _s(
    "asset_freshness_lag_seconds",
    "gauge",
    "Age of the last materialization of an asset with a freshness policy",
    "asset",
)
FRESHNESS_FAIL = _s(
    "asset_freshness_fail_after_seconds",
    "gauge",
    "The asset's freshness policy fail window (its SLO's fail_after_hours)",
    "asset",
)
FRESHNESS_WARN = _s(
    "asset_freshness_warn_after_seconds",
    "gauge",
    "The asset's freshness policy warn window, where it has one",
    "asset",
)
FRESHNESS_STATE = _s(
    "asset_freshness_state",
    "gauge",
    "1 for the freshness state Dagster last recorded for the asset (PASS, WARN, FAIL, UNKNOWN)",
    "asset",
    "state",
)
SLO_TARGET = _s("slo_target_ratio", "gauge", "Each SLO's target attainment", "slo")
SLO_WINDOW = _s("slo_window_seconds", "gauge", "Each SLO's rolling window", "slo")
COST_MTD = _s("cost_month_to_date_usd", "gauge", "Compute cost this month (cost ledger)")
BUDGET = _s("budget_monthly_usd", "gauge", "Monthly budget (platform limits.yaml)")
BUDGET_WARN = _s("budget_warn_ratio", "gauge", "Share of the budget that raises a warning")
BURN_RATE = _s(
    "cost_burn_rate_ratio",
    "gauge",
    "Share of the budget spent over share of the month elapsed (above 1: overspending pace)",
)
COST_PROJECTED = _s(
    "cost_projected_month_usd", "gauge", "This month's cost at the month-to-date pace"
)
SERVING_REQUESTS = _s(
    "serving_requests", "counter", "Prediction requests by HTTP status", "model", "status"
)
SERVING_ERRORS = _s("serving_errors", "counter", "Prediction requests that failed", "model")
SERVING_PREDICTIONS = _s(
    "serving_predictions", "counter", "Entities scored (one per entity of a request)", "model"
)
SERVING_LATENCY = _s(
    "serving_request_latency_seconds", "histogram", "Server-side request latency", "model"
)
TENANT_CONFIG_OK = _s(
    "tenant_config_ok", "gauge", "1 when the tenant's YAML loaded at the exporter's start"
)
FOLDED_LABELS = _s(
    "exporter_folded_labels",
    "counter",
    "Label values replaced by `other` (not a tenant, job or asset the platform defines) or "
    "`unknown` (a run no code location launched), by label; tenant is `platform`",
    "label",
)
REFRESH_SECONDS = _s(
    "exporter_refresh_seconds", "gauge", "How long the last scrape's incremental read took"
)

# Served by `mlplat serve` on its own metrics port (observability/serving.py), not by the
# exporter: the request log's spool lives in the serving process.
SERVING_LOG_DROPPED = _s(
    "serving_log_dropped_rows",
    "counter",
    "Request-log rows dropped, never to reach the lake: the spool was full or its disk refused "
    "the write (counted over restarts of the service on the same spool)",
    "model",
)
SERVING_LOG_SPOOLED_BATCHES = _s(
    "serving_log_spooled_batches",
    "gauge",
    "Request-log batches on disk, not yet in the lake",
    "model",
)
SERVING_LOG_SPOOLED_BYTES = _s(
    "serving_log_spooled_bytes",
    "gauge",
    "Bytes of request-log batches not yet in the lake",
    "model",
)
SERVING_LOG_SPOOL_LIMIT = _s(
    "serving_log_spool_limit_bytes",
    "gauge",
    "The spool's bound: past it batches are dropped; tenant is `platform`",
)
SERVING_LOG_OLDEST_SPOOLED = _s(
    "serving_log_oldest_spooled_age_seconds",
    "gauge",
    "Age of the oldest batch still in the spool (0 when it is empty); tenant is `platform`",
)
SERVE: tuple[Series, ...] = (
    SERVING_LOG_DROPPED,
    SERVING_LOG_SPOOLED_BATCHES,
    SERVING_LOG_SPOOLED_BYTES,
    SERVING_LOG_SPOOL_LIMIT,
    SERVING_LOG_OLDEST_SPOOLED,
)

ALL: tuple[Series, ...] = (
    RUNS,
    RUNS_IN_PROGRESS,
    RUN_QUEUE_WAIT,
    RUN_DURATION,
    STEP_DURATION,
    STEP_FAILURES,
    CHECKS,
    LAST_MATERIALIZATION,
    FRESHNESS_LAG,
    FRESHNESS_FAIL,
    FRESHNESS_WARN,
    FRESHNESS_STATE,
    SLO_TARGET,
    SLO_WINDOW,
    COST_MTD,
    BUDGET,
    BUDGET_WARN,
    BURN_RATE,
    COST_PROJECTED,
    SERVING_REQUESTS,
    SERVING_ERRORS,
    SERVING_PREDICTIONS,
    SERVING_LATENCY,
    TENANT_CONFIG_OK,
    FOLDED_LABELS,
    REFRESH_SECONDS,
)

# Bucket bounds (seconds). Runs and steps of an ML pipeline take seconds to hours; requests take
# milliseconds.
LONG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
