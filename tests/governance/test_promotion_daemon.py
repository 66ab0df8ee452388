"""Under the real daemon (`dagster dev` on a generated workspace, tests/dagster_dev.py):
a model added to a tenant of a running deployment reaches `mlplat pending` on its own, without
the platform location (which runs the promotion sensor) being reloaded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.governance.sensors import OUTCOME, REASON
from platform_assets.tenancy.runs import automation_sensor_name
from tests.dagster_dev import Dev, dagster_dev, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.materialize]

MODEL = "ridehail.driver_retention"
REPORT = dg.AssetKey(["ridehail", "evaluation_reports", "driver_retention"])
# README's example of adding a model to an existing tenant, as a new user would write it.
MODEL_YAML = """\
type: platform_assets.models.component.Model
attributes:
  name: driver_retention
  description: Which drivers respond to a retention bonus.
  features: ["driver_stats:trips_7d", "driver_stats:avg_rating_7d", "zone_demand:*"]
  labels: {source: driver_churn_labels, entity_columns: [driver_id, zone_id],
           timestamp_column: label_ts, label_column: churned}
  algorithm: logistic_regression
  evaluation: {primary_metric: roc_auc, thresholds: {roc_auc: 0.65}}
"""

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def lineage(server: Dev, key: dg.AssetKey) -> list[dg.AssetKey]:
    """`key` and everything upstream of it in ridehail's location as its folder now is (built
    in this process with the server's environment: components find their folders by it)."""
    with server.in_process("ridehail") as defs:
        graph = defs.resolve_asset_graph()
    return sorted(dg.AssetSelection.assets(key).upstream().resolve(graph))


def pending(server: Dev) -> str:
    mlplat = Path(sys.executable).with_name("mlplat")
    done = subprocess.run(
        [str(mlplat), "pending"], env=server.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    with dagster_dev(tmp_path_factory.mktemp("promotion")) as server:
        yield server


def test_a_model_added_to_a_running_deployment_reaches_mlplat_pending(dev):
    # Only the run below trains the new model: ridehail's automation would also retrain its
    # other models (one in a trainer sandbox) on the two cores this test has.
    dev.stop_sensor("ridehail", automation_sensor_name("ridehail"))
    assert MODEL not in pending(dev)

    folder = dev.defs / "ridehail" / "models" / "driver_retention"
    folder.mkdir()
    (folder / "defs.yaml").write_text(MODEL_YAML)
    # Deployed as a tenant's change is: its own location reloads; `platform` keeps running.
    assert dev.reload("ridehail")["__typename"] == "RepositoryLocation"

    keys = lineage(dev, REPORT)
    params = {
        "selector": {
            "repositoryLocationName": "ridehail",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": k.path} for k in keys],
        },
        "runConfigData": {},
    }
    launched = dev.graphql(LAUNCH, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> dg.DagsterRun | None:
        with dev.instance() as instance:
            run = instance.get_run_by_id(run_id)
            return run if run is not None and run.is_finished else None

    # Seven steps: 15 minutes and more on two cores that other suites' daemons also used.
    run = wait_for("the new model's pipeline run", finished, 1800)
    assert run.status == dg.DagsterRunStatus.SUCCESS, (dev.home, run_id)

    listed = wait_for(
        "mlplat pending to list the new model",
        lambda: next((line for line in pending(dev).splitlines() if MODEL in line), None),
        300,
    )
    assert listed.startswith(f"{MODEL} v1 production: needs 1 from approver")

    def promoted() -> list[dg.DagsterRun]:
        with dev.instance() as instance:
            runs = instance.get_runs(dg.RunsFilter(tags={"mlplat/model": MODEL}))
        return runs if runs and all(r.is_finished for r in runs) else []

    (promotion,) = wait_for("the sensor's promote_model run to finish", promoted, 300)
    assert promotion.job_name == "promote_model"
    assert promotion.status == dg.DagsterRunStatus.SUCCESS

    # The sensor's record of it, on the evaluation report's page.
    with dev.instance() as instance:
        records = instance.fetch_observations(REPORT, limit=10).records
    recorded = [r.asset_observation.metadata for r in records]
    assert [md[OUTCOME].value for md in recorded] == ["proposed"]
    assert recorded[0][REASON].value.startswith("first version to meet policy (roc_auc=")
