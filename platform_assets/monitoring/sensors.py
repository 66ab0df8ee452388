"""Retraining on drift that converges: a tenant's sensor that turns a failed drift check of a
model whose YAML says `monitoring.retrain_on_drift: true` into one run of the tenant's pipeline
for that model's lineage (sources, features, training set, model, evaluation report), only when
there is data its champion has not seen.

Each tick decides each model afresh from the platform's own records, so a reset cursor or a
restarted daemon decides the same (docs/monitoring.md):

1. the latest result of one of its drift checks failed (the instance's event log);
2. a snapshot its lineage reads is committed now at a version the champion's training set did
   not read (governance store: champion -> promotion evidence -> training set; lake: that
   training set's manifest). Versions are content hashes: a differing one is new content;
3. no retrain was launched for exactly these versions (the instance's runs launched by the
   tenant's own code location, tagged with the model and a fingerprint of the versions),
   unless it failed or was canceled;
4. none was launched within the model's `monitoring.retrain_cooldown_hours`.

A sensor rather than an automation condition: the drift asset is downstream of the training
set, and a condition can only look at an asset's own checks and its dependencies'. The new
version is then judged and promoted like any other (promotion sensor, approvals).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from platform_assets.cost.budget import over_budget_skip
from platform_assets.governance.reconcile import champion_training_set
from platform_assets.models import manifest as manifests
from platform_assets.monitoring.assets import PREDICTION_CHECK, feature_check, model_features
from platform_assets.resources.lake import LakeResource
from platform_assets.tenancy.catalog import TenantCatalog, check_model_refs
from platform_assets.tenancy.runs import (
    REASON_TAG,
    attributed_tenant,
    pipeline_job_name,
    pipeline_selection,
)
from platform_assets.tenancy.specs import FeatureSetSpec, ModelSpec, TenantSpec

# The model a drift retrain is for (`<tenant>.<model>`) and the fingerprint of the snapshot
# versions it was launched on. Read back only from runs the tenant's own location launched.
MODEL_TAG = "mlplat/retrain_model"
DATA_TAG = "mlplat/retrain_data"
# Seconds between ticks, read when the code location builds (tests run many ticks fast).
INTERVAL_ENV = "MLPLAT_RETRAIN_INTERVAL_SECONDS"
DEFAULT_INTERVAL = 300
# A retrain that ended like this has not learned from its data; it may be tried again.
NOT_DONE = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

# A lake snapshot a model's lineage reads, and what for: (`LABELS` or a view's name, tenant,
# kind, name), as `models.manifest.seen_snapshots` keys them.
Read = tuple[str, str, str, str]


@dataclass(frozen=True)
class Watched:
    """A model that retrains on drift: its drift checks and the snapshots its lineage reads."""

    spec: ModelSpec
    checks: list[dg.AssetCheckKey]
    lineage: list[Read]


def drift_check_keys(tenant: str, spec: ModelSpec, features: list[str]) -> list[dg.AssetCheckKey]:
    key = dg.AssetKey([tenant, "drift", spec.name])
    names = [*(feature_check(f) for f in features), PREDICTION_CHECK]
    return [dg.AssetCheckKey(key, name) for name in names]


def lineage(tenant: str, spec: ModelSpec, resolved: dict[str, tuple[str, FeatureSetSpec]]):
    """The snapshots whose new content a retrain would learn from: the label source, the
    sources of the tenant's own views, and a shared view's table (its owner's: this tenant's
    pipeline reads it, never its sources)."""
    reads: list[Read] = [(manifests.LABELS, tenant, "sources", spec.labels.source)]
    for owner, fs in resolved.values():
        if owner == tenant:
            reads += [(fs.name, tenant, "sources", s) for s in fs.sources]
        else:
            reads.append((fs.name, owner, "features", fs.name))
    return list(dict.fromkeys(reads))


def fingerprint(current: dict[tuple[str, str, str], str]) -> str:
    """One hash of the snapshot versions a retrain would read, whatever their order."""
    lines = sorted(f"{t}/{k}/{n}@{v}" for (t, k, n), v in current.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def retrain_interval() -> int:
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None:
        return DEFAULT_INTERVAL
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"{INTERVAL_ENV}={raw!r}: the drift-retrain sensor's interval is a whole number of "
            "seconds, at least 1"
        )
    return int(raw)


def _failed_checks(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]) -> list[str]:
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return [
        r.evaluation.description or r.key.name
        for r in sorted(records.values(), key=lambda r: r.key.name)
        if r.evaluation is not None and not r.evaluation.passed
    ]


def _seen(lake: LakeResource, tenant: str, model: str, champion: int, ts_version: str | None):
    """What the champion's training set read (`seen_snapshots`), and where that came from in
    words; nothing is known to be seen when no training set or manifest is on record."""
    if ts_version is None:
        return {}, f"v{champion}'s promotion evidence names no training set"
    try:
        manifest = manifests.load(lake, tenant, model, ts_version)
    except manifests.ReproduceError as exc:
        return {}, str(exc)
    return manifests.seen_snapshots(manifest), f"v{champion}'s training set @{ts_version}"


def retrain_runs(instance: dg.DagsterInstance, tenant: str, registered: str) -> list:
    """The drift retrains of `registered`, newest first: runs tagged with the model that the
    tenant's own code location launched (`attributed_tenant`: a tag alone is anyone's claim)."""
    records = instance.get_run_records(dg.RunsFilter(tags={MODEL_TAG: registered}))
    return [r for r in records if attributed_tenant(r.dagster_run) == tenant]


def _when(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def decide(
    context: dg.SensorEvaluationContext,
    lake: LakeResource,
    tenant: str,
    watched: Watched,
    now: datetime,
) -> dg.RunRequest | str:
    """A retrain of one model, or why not (a sentence naming the model)."""
    spec = watched.spec
    registered = f"{tenant}.{spec.name}"
    failed = _failed_checks(context.instance, watched.checks)
    if not failed:
        return f"{registered}: no failed drift check"
    found = champion_training_set(registered)
    if found is None:
        return f"{registered}: drift checks failed, but it has no champion to retrain against"
    champion, ts_version = found
    current = {(t, k, n): lake.current(t, k, n).version for _, t, k, n in watched.lineage}
    seen, basis = _seen(lake, tenant, spec.name, champion, ts_version)
    unseen = []
    for read in watched.lineage:
        _, t, k, n = read
        version = current[(t, k, n)]
        if seen.get(read) != version:
            said = f"it read @{seen[read]}" if read in seen else "not on its record"
            unseen.append(f"{t}/{k}/{n}@{version} ({said})")
    unseen = list(dict.fromkeys(unseen))  # a source read by two views is one new snapshot
    if not unseen:
        return (
            f"{registered}: drift checks failed, but there is no data v{champion} has not seen: "
            f"{basis} read every snapshot its lineage holds now; retraining would learn nothing"
        )
    data = fingerprint(current)
    runs = retrain_runs(context.instance, tenant, registered)
    tried = [r for r in runs if r.dagster_run.tags.get(DATA_TAG) == data]
    done = [r for r in tried if r.dagster_run.status not in NOT_DONE]
    if done:
        run = done[0]
        return (
            f"{registered}: already retrained on this data (snapshots {data}): run "
            f"{run.dagster_run.run_id} ({run.dagster_run.status.value.lower()}), launched "
            f"{_when(run.create_timestamp)}"
        )
    cooldown = timedelta(hours=spec.monitoring.retrain_cooldown_hours)
    if runs and now < (until := runs[0].create_timestamp + cooldown):
        return (
            f"{registered}: new data, but within its retrain cooldown "
            f"({spec.monitoring.retrain_cooldown_hours:g} h) of run {runs[0].dagster_run.run_id} "
            f"launched {_when(runs[0].create_timestamp)}; next retrain at {_when(until)} or later"
        )
    eval_key = dg.AssetKey([tenant, "evaluation_reports", spec.name])
    selection = (
        dg.AssetSelection.assets(eval_key).upstream() & pipeline_selection(tenant)
    ).resolve(context.repository_def.asset_graph)
    # The data first: the drift descriptions can be long, and the tag is capped.
    reason = f"drift of {registered} with new data ({', '.join(unseen)}): {'; '.join(failed)}"
    return dg.RunRequest(
        # One run per data and attempt, should the daemon evaluate this tick twice.
        run_key=f"{spec.name}:drift:{data}:{len(tried) + 1}",
        asset_selection=sorted(selection, key=lambda k: k.to_user_string()),
        tags={
            "tenant": tenant,
            # Tag values are capped; the run's checks hold the full story.
            REASON_TAG: reason[:1000],
            MODEL_TAG: registered,
            DATA_TAG: data,
        },
    )


def retrain_sensor(
    tenant: TenantSpec, models: list[Watched], interval: int = DEFAULT_INTERVAL
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{tenant.name}_drift_retrain",
        job_name=pipeline_job_name(tenant.name),
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains {tenant.name}'s models whose drift checks failed "
        "(monitoring.retrain_on_drift in their YAML) when there is data their champion has not "
        "seen, once per data, at most once per cooldown.",
    )
    def drift_retrain(context: dg.SensorEvaluationContext, lake: LakeResource):
        now = datetime.now(UTC)
        requests, skipped = [], []
        for watched in models:
            decision = decide(context, lake, tenant.name, watched, now)
            if isinstance(decision, dg.RunRequest):
                requests.append(decision)
            else:
                skipped.append(decision)
        if not requests:
            return dg.SkipReason("; ".join(skipped))
        for reason in skipped:
            context.log.info(reason)
        # Nothing is remembered: the requests stand on the next tick once the budget allows.
        return over_budget_skip(context.instance, tenant.name) or requests

    return drift_retrain


def watch(catalog: TenantCatalog, spec: ModelSpec) -> Watched:
    resolved = check_model_refs(catalog, spec)
    tenant = catalog.tenant.name
    checks = drift_check_keys(tenant, spec, list(model_features(spec, resolved)))
    return Watched(spec, checks, lineage(tenant, spec, resolved))


def tenant_retrain_sensors(catalog: TenantCatalog) -> list[dg.SensorDefinition]:
    """The tenant's retrain sensor, when any of its models retrains on drift."""
    models = [
        watch(catalog, spec)
        for spec in sorted(catalog.models.values(), key=lambda s: s.name)
        if spec.monitoring.retrain_on_drift
    ]
    return [retrain_sensor(catalog.tenant, models, retrain_interval())] if models else []
