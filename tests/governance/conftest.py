"""A governance sandbox: real MLflow (SQLite) and Dagster instance in tmp, the demo tenants' YAML.

Model versions are registered directly with the tags the model and evaluation assets set, so the
workflow is exercised without training; checks are reported to the instance as runless events.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.governance.store import GovernanceStore
from platform_assets.governance.workflow import Governance
from platform_assets.tenancy.catalog import TenantCatalog, load_all
from resources.mlflow import MlflowResource

MODEL = "payments.fraud_detector"
LAUNCHER = "lena@payments.example"  # trained the versions; no role
APPROVER, APPROVER2 = "paul@payments.example", "pat@payments.example"
VIEWER, ADMIN = "vera@payments.example", "priya@payments.example"
OTHER_TENANT = "grace@growth.example"  # an approver of growth only
PLATFORM_ADMIN = "ada@platform.example"

CHECKS = [
    (["payments", "training_sets", "fraud_detector"], "expectations"),
    (["payments", "training_sets", "fraud_detector"], "leakage"),
    (["payments", "features", "card_activity"], "expectations"),
    (["payments", "features", "merchant_risk"], "expectations"),
]


def report_checks(instance: dg.DagsterInstance, passed: bool = True, only: str | None = None):
    for path, name in CHECKS:
        if only and name != only:
            continue
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=dg.AssetKey(path), check_name=name, passed=passed)
        )


@dataclass
class Sandbox:
    instance: dg.DagsterInstance
    mlflow: MlflowResource
    store: GovernanceStore
    catalogs: dict[str, TenantCatalog]
    deploy_dir: Path
    observations: list[dg.AssetObservation]

    def governance(self, catalogs: dict[str, TenantCatalog] | None = None) -> Governance:
        return Governance(
            self.store,
            self.mlflow,
            instance=self.instance,
            catalogs=catalogs or self.catalogs,
            admins=[PLATFORM_ADMIN],
            emit=self.observations.append,
            deploy_dir=self.deploy_dir,
        )

    def register(
        self,
        average_precision: float,
        roc_auc: float = 0.8,
        launched_by: str | None = LAUNCHER,
        run_id: str = "run-0",
        name: str = MODEL,
    ) -> int:
        """A new version of `name` carrying the evaluation report's tags."""
        client = self.mlflow.client()
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        source = Path(self.mlflow.artifact_root) / name
        source.mkdir(parents=True, exist_ok=True)
        tags = {
            "eval_average_precision": f"{average_precision:.6f}",
            "eval_roc_auc": f"{roc_auc:.6f}",
            "passes_thresholds": "true",
            "dagster_run_id": run_id,
            "training_set_version": "abc123",
            "feature_service": "fraud_detector_v1",
        }
        if launched_by:
            tags["mlplat/launched_by"] = launched_by
        mv = client.create_model_version(name, source.as_uri(), tags=tags)
        return int(mv.version)

    def with_policy(self, **environments) -> dict[str, TenantCatalog]:
        """The catalogs with fraud_detector's per-environment approvals replaced."""
        catalogs = {k: copy.copy(v) for k, v in self.catalogs.items()}
        pay = catalogs["payments"]
        pay.models = dict(pay.models)
        spec = pay.models["fraud_detector"]
        envs = spec.promotion.environments.model_copy(
            update={
                k: type(spec.promotion.environments.production).model_validate(v)
                for k, v in environments.items()
            }
        )
        pay.models["fraud_detector"] = spec.model_copy(
            update={"promotion": spec.promotion.model_copy(update={"environments": envs})}
        )
        return catalogs


@pytest.fixture(scope="session")
def session_mlflow(tmp_path_factory: pytest.TempPathFactory) -> MlflowResource:
    """One MLflow store for the session: creating one costs seconds of migrations. Each test
    starts from an empty registry (see gov_sandbox)."""
    root = tmp_path_factory.mktemp("mlflow")
    mlflow = MlflowResource(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "artifacts")
    )
    mlflow.client().search_registered_models()
    return mlflow


@pytest.fixture
def gov_sandbox(platform_home: Path, session_mlflow: MlflowResource) -> Sandbox:
    # In-memory Dagster storage: the workflow only reads check evaluations and run tags, and a
    # fresh on-disk instance costs seconds of migrations per test.
    instance = dg.DagsterInstance.ephemeral()
    client = session_mlflow.client()
    for model in client.search_registered_models():
        client.delete_registered_model(model.name)  # versions restart at 1
    data = platform_home / "data"
    store = GovernanceStore(f"sqlite:///{data / 'platform.db'}")
    report_checks(instance)
    yield Sandbox(instance, session_mlflow, store, load_all(), data / "deploy", [])
    store.dispose()
    instance.dispose()
