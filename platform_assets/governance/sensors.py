"""Submits newly evaluated model versions that meet their promotion policy.

Reads evaluation-report materializations after a cursor kept per evaluation-report asset, so a
burst of one model's evaluations never moves another model's cursor past records it has not
read. Per model and tick the new evaluations are tried best first (by the primary metric the
evaluation step recorded) and the first that meets the policy, judged by the same
`Governance.assess` the promotion job re-runs, becomes a `promote_model` run with run key
`promote:<model>:<version>`; the others are superseded. An event that cannot be evidence (no
run, missing metadata) is skipped and named in the tick's reason, never raised. A tenant over
its budget gets no promotion run (the tick says why, in the budget's words); that model's cursor
stays before its version so it is submitted once the budget allows.
"""

import json

import dagster as dg

from platform_assets.cost.budget import filter_run_requests
from platform_assets.governance.identity import SENSOR_IDENTITY, sensor_proof
from platform_assets.governance.promotion import promote_model
from platform_assets.governance.workflow import governance_for
from platform_assets.models.metrics import HIGHER_IS_BETTER
from platform_assets.resources.mlflow import MlflowResource

PER_KEY_LIMIT = 100
# Wall time a tick spends assessing before it leaves the remaining models for the next tick;
# their cursors stay put, so nothing is skipped, only deferred.
TICK_BUDGET_S = 1.2
# Models whose new evaluations are read and assessed together, their evidence in batched queries;
# the tick budget is checked between chunks (small ones: a chunk in progress finishes).
CHUNK = 10


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


def _usable(record, key: dg.AssetKey) -> tuple[str, int] | str:
    """(registered model, version) of an evaluation event, or why it is skipped."""
    md = record.asset_materialization.metadata
    where = f"{key.to_user_string()} event {record.storage_id}"
    if not record.run_id:
        return f"{where}: reported outside a run; not evidence, skipped"
    missing = [f for f in ("registered_model", "model_version", "metrics") if f not in md]
    if missing:
        return f"{where}: no {', '.join(missing)} metadata; skipped"
    name = md["registered_model"].value
    if name != f"{key.path[0]}.{key.path[-1]}":
        return f"{where}: names {name!r}, not this asset's model; skipped"
    try:
        return name, int(md["model_version"].value)
    except (TypeError, ValueError):
        return f"{where}: model_version {md['model_version'].value!r} is not a number; skipped"


def _metric(record, gov, name: str) -> float:
    _, spec = gov.locate(name)
    metric = spec.evaluation.primary_metric
    value = record.asset_materialization.metadata["metrics"].value.get(metric)
    if not isinstance(value, int | float):
        return float("-inf")
    return float(value) if HIGHER_IS_BETTER[metric] else -float(value)


def _ranked(gov, key: dg.AssetKey, records, submitted, reasons: list[str]):
    """The usable evaluations of one model, ((name, version), record) best first: the newest
    evaluation of a version wins, then the primary metric; the reasons for the rest appended."""
    usable = []
    for record in records:
        found = _usable(record, key)
        if isinstance(found, str):
            reasons.append(found)
            continue
        name, version = found
        if (name, version) in submitted:
            reasons.append(f"{name} v{version}: already submitted")
            continue
        try:
            gov.locate(name)
        except KeyError as exc:
            reasons.append(f"{key.to_user_string()} event {record.storage_id}: {exc}")
            continue
        usable.append((record, name, version))
    by_version = {(n, v): r for r, n, v in usable}
    return sorted(
        by_version.items(),
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
):
    """Run requests (with the storage id each came from and its asset), the reasons for the
    rest, and the cursor after this tick. Models whose new events were read longest ago go
    first; once `budget_s` is spent the rest wait for the next tick."""
    import time

    deadline = time.monotonic() + budget_s

    new_cursor = dict(cursor)
    requests, reasons = [], []
    default = cursor.get("*", 0)
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
    if "*" in new_cursor:
        del new_cursor["*"]
        for k in keys:
            new_cursor.setdefault(k.to_user_string(), default)
    names = [f"{k.path[0]}.{k.path[-1]}" for k in fresh]
    submitted = gov.store.submitted_versions(names) if names else set()
    champions = gov.store.champions_all() if names else {}
    for start in range(0, len(fresh), CHUNK):
        if time.monotonic() > deadline:
            reasons.append(
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
                new_cursor[key.to_user_string()] = records[-1].storage_id
                ranked[key] = _ranked(gov, key, records, submitted, reasons)
        # Each round assesses every model's best remaining candidate, their evidence read
        # together; a model leaves the rounds with its first candidate that meets the policy.
        while any(ranked.values()):
            heads = {key: items.pop(0) for key, items in ranked.items() if items}
            gov.prefetch([record for _, record in heads.values()])
            for key, ((name, version), record) in heads.items():
                assessment = gov.assess(name, version, champions.get(name), record=record)
                if not assessment.ok:
                    reasons.append(f"{name} v{version}: {assessment.why}")
                    continue
                for (_, other), _ in ranked.pop(key):
                    reasons.append(f"{name} v{other}: superseded by v{version} in this tick")
                request = _request(gov, key, name, version, assessment.why)
                requests.append((key, record.storage_id, request))
    return requests, reasons, new_cursor


# The job by name: given the job object, Dagster rebuilds the sensor when it binds the job's
# resources, which emits a BetaWarning on every load.
@dg.sensor(
    job_name=promote_model.name,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Submit evaluated models that meet their promotion policy for approval.",
)
def promotion_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    gov = governance_for(mlflow, context.instance)
    try:
        found, reasons, cursor = candidates(
            gov,
            context.instance,
            evaluation_keys(context.instance),
            read_cursor(context.cursor),
        )
    finally:
        gov.close()
    requests, over_budget = filter_run_requests(context.instance, [r for _, _, r in found])
    for key, storage_id, request in found:
        if request not in requests:  # held back by the budget: read it again next tick
            cursor[key.to_user_string()] = min(cursor[key.to_user_string()], storage_id - 1)
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    reasons += over_budget
    if not requests:
        return dg.SkipReason("; ".join(reasons) or "no new evaluation reports")
    return requests
