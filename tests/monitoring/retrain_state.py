"""payments.fraud_detector with a champion whose drift checks fail, built the way production
builds it: the tenant pipeline run for real, the version proposed and approved through the
governance workflow, then its batch scores and drift. For the drift-retrain tests, in-process
and under the daemon."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from platform_assets.data.generator import generate
from platform_assets.governance.identity import SENSOR_IDENTITY, Identity
from platform_assets.governance.workflow import governance_for
from platform_assets.monitoring.sensors import MODEL_TAG

MODEL = "payments.fraud_detector"
APPROVER = "paul@payments.example"  # an approver in payments' tenant YAML
TRANSACTIONS = "transactions.parquet"  # in the tenant's inbox
FIRST_DELIVERY = 0.9  # the share of the generated transactions the champion is trained on
SOURCES = dg.AssetKey(["payments", "sources", "transactions"])
MONITORED = [
    dg.AssetKey(["payments", "predictions", "fraud_detector"]),
    dg.AssetKey(["payments", "drift", "fraud_detector"]),
]


def edit_payments(defs_root: Path, cooldown_hours: float | None = None) -> None:
    """The copied payments folder with its transactions read from a file in the inbox (so new
    data can land), a smaller booster (the tests are about when it retrains, not how well),
    drift thresholds it always exceeds, and `cooldown_hours` when given."""
    folder = defs_root / "payments"
    path = folder / "sources" / "transactions" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["attributes"]["generator"]
    doc["attributes"]["path"] = TRANSACTIONS
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path = folder / "models" / "fraud_detector" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["params"] = {"max_iter": 40, "learning_rate": 0.2, "max_depth": 3}
    # Thresholds any difference between the training set and the champion's scoring exceeds:
    # the champion drifts, whatever share of the data it was trained on.
    doc["attributes"]["monitoring"]["thresholds"] = {"psi": 0.001, "ks": 0.001, "missing": 0.0}
    if cooldown_hours is not None:
        doc["attributes"]["monitoring"]["retrain_cooldown_hours"] = cooldown_hours
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def set_cooldown(defs_root: Path, hours: float) -> None:
    path = defs_root / "payments" / "models" / "fraud_detector" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["monitoring"]["retrain_cooldown_hours"] = hours
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def deliver(lake_root: str, share: float) -> None:
    """The transactions file in payments' inbox as of a delivery: the first `share` of the
    generated transactions by event time (a later delivery, a larger share, holds new rows).
    Written whole: a reader never sees half a file."""
    df = generate("payments.transactions").sort_values("event_ts", kind="stable")
    target = Path(lake_root) / "payments" / "inbox" / TRANSACTIONS
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    df.iloc[: round(len(df) * share)].reset_index(drop=True).to_parquet(partial)
    partial.replace(target)


def champion_with_drift(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[str]:
    """Run payments' pipeline, make its version the champion through the governance workflow
    (the promotion sensor's proposal, an approver's approval), score and compute drift with
    it. Returns the drift checks that failed: the demo data always drifts somewhere."""
    deliver(defs.resources["lake"].root, FIRST_DELIVERY)
    job = defs.resolve_job_def("payments_pipeline")
    assert job.execute_in_process(instance=instance).success
    gov = governance_for(defs.resources["mlflow"], instance)
    try:
        proposed = gov.propose(MODEL, 1, Identity(SENSOR_IDENTITY, "platform"))
        assert "awaits 1 production approval" in proposed.message, proposed.message
        assert gov.approve(MODEL, 1, APPROVER, "retrain tests").champion == 1
    finally:
        gov.close()
    result = job.execute_in_process(instance=instance, asset_selection=MONITORED)
    assert result.success
    return [
        e.asset_check_evaluation_data.check_name
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and not e.asset_check_evaluation_data.passed
    ]


def retrain_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={MODEL_TAG: MODEL})))
