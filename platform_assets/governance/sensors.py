"""Submits newly evaluated model versions that meet their promotion policy, and records on each
evaluation report what it concluded about it.

Reads evaluation-report materializations after a cursor kept per evaluation-report asset, so a
burst of one model's evaluations never moves another model's cursor past records it has not
read. Per model and tick the new evaluations are tried best first (by the primary metric the
evaluation step recorded) and the first that meets the policy, judged by the same
`Governance.assess` the promotion job re-runs, becomes a `promote_model` run with run key
`promote:<model>:<version>`; the others are superseded. Models are looked up in their tenant's
YAML as it is at the tick (`TenantCatalogs`), so a model added to a running deployment is judged.

The cursor moves past an evaluation only with a judgement recorded on its evaluation-report
asset: an `AssetObservation` with `promotion/outcome` (`proposed`, `not_proposed`: assessed and
not submitted, or `not_judged`: it can never be, e.g. no run or no metadata) and
`promotion/reason`, signed by the sensor and written once per evaluation event however often a
tick is retried. What can still change leaves the cursor before the evaluation, named in the
tick's reason: the tenant's folder failing to load, a model not (yet) in its tenant's YAML for
`UNKNOWN_MODEL_GRACE_S`, the tenant's budget (its message), the tick's time budget; a failure to
reach the governance store or the event log fails the tick, and Dagster runs the next one from
the same cursor.
"""

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg

from platform_assets.cost.budget import filter_run_requests
from platform_assets.governance.identity import (
    SENSOR_IDENTITY,
    check_judgement_proof,
    judgement_proof,
    sensor_proof,
)
from platform_assets.governance.promotion import promote_model
from platform_assets.governance.workflow import governance_for
from platform_assets.models.metrics import HIGHER_IS_BETTER
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.tenancy.strict_yaml import PlatformConfigError

PER_KEY_LIMIT = 100
# Wall time a tick spends assessing before it leaves the remaining models for the next tick;
# their cursors stay put, so nothing is skipped, only deferred.
TICK_BUDGET_S = 1.2
# Models whose new evaluations are read and assessed together, their evidence in batched queries;
# the tick budget is checked between chunks (small ones: a chunk in progress finishes).
CHUNK = 10
# How long an evaluation of a model that its tenant's YAML does not hold waits before it is
# recorded as not judged: on Kubernetes the kubelet updates the platform's copy of a tenant's
# ConfigMap a minute or two after the tenant's own location, rolled by the deploy, runs the model.
UNKNOWN_MODEL_GRACE_S = 300.0
# Observations read per query when looking for judgements already recorded.
RECORDED_PAGE = 500

# What the sensor records on an evaluation-report asset about one of its events.
OUTCOME = "promotion/outcome"
REASON = "promotion/reason"
EVENT = "promotion/evaluation_event"
VERSION = "promotion/model_version"
RUN_KEY = "promotion/run_key"
PROOF = "promotion/proof"
PROPOSED, NOT_PROPOSED, NOT_JUDGED = "proposed", "not_proposed", "not_judged"


def evaluation_keys(instance: dg.DagsterInstance) -> list[dg.AssetKey]:
    """Every tenant's evaluation reports (`<tenant>/evaluation_reports/<model>`) the instance
    has records of. From the instance, not the sensor's repository: the platform location holds
    no tenant's assets, and only a tenant's own location can materialize keys under its name."""
    return sorted(
        (
            k
            for k in instance.get_asset_keys()
            if len(k.path) == 3 and k.path[1] == "evaluation_reports"
        ),
        key=lambda k: k.to_user_string(),
    )


def read_cursor(raw: str | None) -> dict[str, int]:
    """Storage id read up to, per evaluation-report asset; an old single-number cursor applies
    to every asset."""
    if not raw:
        return {}
    if raw.lstrip("-").isdigit():
        return {"*": int(raw)}
    return {k: int(v) for k, v in json.loads(raw).items()}


@dataclass(frozen=True)
class Judgement:
    """What the sensor concluded about one evaluation event."""

    key: dg.AssetKey
    storage_id: int
    outcome: str
    reason: str
    name: str = ""
    version: int | None = None
    run_key: str = ""

    @property
    def line(self) -> str:
        """The judgement as the tick's reason names it."""
        if self.version is None:
            return f"{self.key.to_user_string()} event {self.storage_id}: {self.reason}"
        return f"{self.name} v{self.version}: {self.reason}"

    def observation(self, keys) -> dg.AssetObservation:
        metadata: dict[str, str | int] = {
            OUTCOME: self.outcome,
            REASON: self.reason,
            EVENT: self.storage_id,
        }
        if self.version is not None:
            metadata[VERSION] = self.version
        if self.run_key:
            metadata[RUN_KEY] = self.run_key
        asset = self.key.to_user_string()
        metadata[PROOF] = judgement_proof(keys, asset, self.storage_id, self.outcome)
        return dg.AssetObservation(
            asset_key=self.key,
            description=f"promotion sensor, event {self.storage_id}: {self.outcome}: {self.reason}",
            metadata=metadata,
        )


@dataclass
class Tick:
    """What one tick concluded: run requests (each with its judgement), the judgements of the
    evaluations it passed over, the lines of its reason and the cursor after it."""

    cursor: dict[str, int]
    requests: list[tuple[Judgement, dg.RunRequest]] = field(default_factory=list)
    judgements: list[Judgement] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def judge(
        self,
        key: dg.AssetKey,
        record: dg.EventLogRecord,
        outcome: str,
        reason: str,
        found: tuple[str, int] | None = None,
    ) -> None:
        name, version = found if found else ("", None)
        judgement = Judgement(key, record.storage_id, outcome, reason, name, version)
        self.judgements.append(judgement)
        self.lines.append(judgement.line)

    def hold(self, key: dg.AssetKey, storage_id: int) -> None:
        """Leave the cursor before this event, so the next tick reads it again."""
        name = key.to_user_string()
        self.cursor[name] = min(self.cursor[name], storage_id - 1)

    def defer(self, key: dg.AssetKey, storage_id: int, why: str) -> None:
        self.hold(key, storage_id)
        self.lines.append(why)


def _usable(record, key: dg.AssetKey) -> tuple[str, int] | str:
    """(registered model, version) of an evaluation event, or why it can never be judged."""
    md = record.asset_materialization.metadata
    if not record.run_id:
        return "reported outside a run; not evidence"
    missing = [f for f in ("registered_model", "model_version", "metrics") if f not in md]
    if missing:
        return f"no {', '.join(missing)} metadata"
    name = md["registered_model"].value
    if name != f"{key.path[0]}.{key.path[-1]}":
        return f"names {name!r}, not this asset's model"
    try:
        return name, int(md["model_version"].value)
    except (TypeError, ValueError):
        return f"model_version {md['model_version'].value!r} is not a number"


def _known(gov, key, record, found: tuple[str, int], now: float, tick: Tick) -> bool:
    """Is the model in its tenant's YAML as it is now? If not, the event waits for a later tick
    (its tenant's folder does not load, or the model is new and its YAML may not have reached
    this process yet) or is judged: no such model."""
    name, version = found
    tenant, _, model = name.partition(".")
    try:
        gov.locate(name)
    except KeyError:
        if now - record.timestamp < UNKNOWN_MODEL_GRACE_S:
            tick.defer(
                key,
                record.storage_id,
                f"{name} v{version}: not in tenant {tenant!r}'s YAML yet; read again each tick "
                f"until {UNKNOWN_MODEL_GRACE_S:.0f} s after its evaluation",
            )
        else:
            reason = f"no model {model!r} in tenant {tenant!r}'s YAML as it is now"
            tick.judge(key, record, NOT_JUDGED, reason, found)
        return False
    except (PlatformConfigError, OSError) as exc:
        tick.defer(
            key,
            record.storage_id,
            f"{name} v{version}: waits for tenant {tenant!r}'s folder to load ({exc})",
        )
        return False
    return True


def _metric(record, gov, name: str) -> float:
    _, spec = gov.locate(name)
    metric = spec.evaluation.primary_metric
    value = record.asset_materialization.metadata["metrics"].value.get(metric)
    if not isinstance(value, int | float):
        return float("-inf")
    return float(value) if HIGHER_IS_BETTER[metric] else -float(value)


def _ranked(gov, key: dg.AssetKey, records, submitted, now: float, tick: Tick):
    """The judgeable evaluations of one model, ((name, version), record) best first: the newest
    evaluation of a version wins, then the primary metric; the rest judged or deferred."""
    newest: dict[tuple[str, int], dg.EventLogRecord] = {}
    for record in records:
        found = _usable(record, key)
        if isinstance(found, str):
            tick.judge(key, record, NOT_JUDGED, found)
            continue
        if found in submitted:
            tick.judge(key, record, NOT_PROPOSED, "already submitted", found)
            continue
        if not _known(gov, key, record, found, now, tick):
            continue
        if found in newest:
            older = newest[found]
            reason = f"a newer evaluation of v{found[1]} (event {record.storage_id}) is judged"
            tick.judge(key, older, NOT_PROPOSED, reason, found)
        newest[found] = record
    return sorted(
        newest.items(),
        key=lambda item: (_metric(item[1], gov, item[0][0]), item[1].storage_id),
        reverse=True,
    )


def _request(gov, key: dg.AssetKey, name: str, version: int, why: str) -> dg.RunRequest:
    config = {
        "registered_model": name,
        "version": version,
        "reason": why,
        "sensor_proof": sensor_proof(gov.store.keys, name, version),
    }
    return dg.RunRequest(
        run_key=f"promote:{name}:{version}",
        run_config={"ops": {"submit_candidate": {"config": config}}},
        tags={
            "tenant": key.path[0],
            "mlplat/model": name,
            "mlplat/version": str(version),
            "mlplat/launched_by": SENSOR_IDENTITY,
        },
    )


def candidates(
    gov,
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    cursor: dict[str, int],
    budget_s: float = TICK_BUDGET_S,
) -> Tick:
    """Run requests, judgements and reasons of one tick, and the cursor after it. Models whose
    new events were read longest ago go first; once `budget_s` is spent the rest wait for the
    next tick."""
    deadline = time.monotonic() + budget_s
    now = time.time()
    default = cursor.get("*", 0)
    tick = Tick({k: v for k, v in cursor.items() if k != "*"})
    if "*" in cursor:
        for k in keys:
            tick.cursor.setdefault(k.to_user_string(), default)
    # One query finds the assets with anything new; only those are read.
    latest = {
        r.asset_entry.asset_key: r.asset_entry.last_materialization_record
        for r in instance.get_asset_records(keys)
    }
    fresh = sorted(
        (
            k
            for k in keys
            if latest.get(k) is not None
            and latest[k].storage_id > cursor.get(k.to_user_string(), default)
        ),
        key=lambda k: cursor.get(k.to_user_string(), default),
    )
    names = [f"{k.path[0]}.{k.path[-1]}" for k in fresh]
    submitted = gov.store.submitted_versions(names) if names else set()
    champions = gov.store.champions_all() if names else {}
    for start in range(0, len(fresh), CHUNK):
        if time.monotonic() > deadline:
            tick.lines.append(
                f"{len(fresh) - start} models with new evaluations wait for the next tick"
            )
            break
        ranked = {}
        for key in fresh[start : start + CHUNK]:
            after = cursor.get(key.to_user_string(), default)
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
                limit=PER_KEY_LIMIT,
                ascending=True,
            ).records
            if records:
                tick.cursor[key.to_user_string()] = records[-1].storage_id
                ranked[key] = _ranked(gov, key, records, submitted, now, tick)
        # Each round assesses every model's best remaining candidate, their evidence read
        # together; a model leaves the rounds with its first candidate that meets the policy.
        while any(ranked.values()):
            heads = {key: items.pop(0) for key, items in ranked.items() if items}
            gov.prefetch([record for _, record in heads.values()])
            for key, (found, record) in heads.items():
                name, version = found
                assessment = gov.assess(name, version, champions.get(name), record=record)
                if not assessment.ok:
                    # Without evidence (the platform's records do not establish the version's
                    # lineage) it is not a judgement on the model.
                    broken = "evidence_error" in assessment.evidence
                    outcome = NOT_JUDGED if broken else NOT_PROPOSED
                    tick.judge(key, record, outcome, assessment.why, found)
                    continue
                for other, other_record in ranked.pop(key):
                    reason = f"superseded by v{version} in this tick"
                    tick.judge(key, other_record, NOT_PROPOSED, reason, other)
                request = _request(gov, key, name, version, assessment.why)
                judgement = Judgement(
                    key, record.storage_id, PROPOSED, assessment.why, name, version, request.run_key
                )
                tick.requests.append((judgement, request))
    return tick


def unrecorded(instance: dg.DagsterInstance, keys, judgements: list[Judgement]) -> list[Judgement]:
    """The judgements not yet recorded: a tick retried from an older cursor (the daemon stopped
    between recording and saving the cursor, a budget hold re-reading later events) records
    nothing twice. Only observations the sensor signed count, so an observation anyone reports
    on the asset cannot stand in for the platform's record."""
    by_key: dict[dg.AssetKey, list[Judgement]] = defaultdict(list)
    for judgement in judgements:
        by_key[judgement.key].append(judgement)
    out = []
    for key, found in by_key.items():
        done = _recorded(instance, keys, key, min(j.storage_id for j in found))
        out += [j for j in found if j.storage_id not in done]
    return out


def _recorded(instance: dg.DagsterInstance, keys, key: dg.AssetKey, first: int) -> set[int]:
    """Evaluation events of `key` from `first` on with a judgement the sensor signed: each is
    recorded after its event, so only observations after `first` are read."""
    asset, done, page = key.to_user_string(), set(), None
    while True:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=first),
            limit=RECORDED_PAGE,
            cursor=page,
            ascending=True,
        )
        for record in result.records:
            md = record.asset_observation.metadata
            if not {EVENT, OUTCOME, PROOF} <= set(md):
                continue
            event, outcome = md[EVENT].value, md[OUTCOME].value
            if isinstance(event, int) and check_judgement_proof(
                keys, str(md[PROOF].value), asset, event, str(outcome)
            ):
                done.add(event)
        if not result.has_more:
            return done
        page = result.cursor


# The job by name: given the job object, Dagster rebuilds the sensor when it binds the job's
# resources, which emits a BetaWarning on every load.
@dg.sensor(
    job_name=promote_model.name,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Submit evaluated models that meet their promotion policy for approval; record "
    "on each evaluation report what was concluded and why.",
)
def promotion_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    gov = governance_for(mlflow, context.instance)
    try:
        tick = candidates(
            gov,
            context.instance,
            evaluation_keys(context.instance),
            read_cursor(context.cursor),
        )
        keys = gov.store.keys
    finally:
        gov.close()
    requests, over_budget = filter_run_requests(context.instance, [r for _, r in tick.requests])
    judgements = list(tick.judgements)
    for judgement, request in tick.requests:
        if request in requests:
            judgements.append(judgement)
        else:  # held back by the budget: judged again next tick, recorded once submitted
            tick.hold(judgement.key, judgement.storage_id)
    context.update_cursor(json.dumps(tick.cursor, sort_keys=True))
    # Recorded by the daemon with the tick, before it saves the cursor: if it stops between the
    # two, the retried tick finds these and does not record them again.
    events = [j.observation(keys) for j in unrecorded(context.instance, keys, judgements)]
    reasons = tick.lines + over_budget
    if requests:
        if reasons:
            context.log.info("; ".join(reasons))
        return dg.SensorResult(run_requests=requests, asset_events=events)
    return dg.SensorResult(
        skip_reason="; ".join(reasons) or "no new evaluation reports", asset_events=events
    )
