"""A governance sandbox: real MLflow (SQLite) and Dagster instance in tmp, the demo tenants' YAML.

Model versions come from real Dagster runs of small stand-ins for the feature views, training
set, model and evaluation report of payments.fraud_detector: they write the same metadata the
platform's assets write (and register a real MLflow version), so the workflow reads its
evidence from a real event log and run records, without training.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.governance.identity import SENSOR_IDENTITY, Identity
from platform_assets.governance.promotion import promote_model, rollback_model
from platform_assets.governance.sensors import EVENT, OUTCOME, REASON, promotion_sensor
from platform_assets.governance.store import GovernanceStore
from platform_assets.governance.workflow import Governance
from platform_assets.models.artifacts import artifact_digest
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.tenancy.catalog import TenantCatalog, load_all

MODEL = "payments.fraud_detector"
REPORT = dg.AssetKey(["payments", "evaluation_reports", "fraud_detector"])
SENSOR = Identity(SENSOR_IDENTITY, "platform")
LAUNCHER = "lena@payments.example"  # trained the versions; no role
APPROVER, APPROVER2 = "paul@payments.example", "pat@payments.example"
VIEWER, ADMIN = "vera@payments.example", "priya@payments.example"
OTHER_TENANT = "grace@growth.example"  # an approver of growth only
PLATFORM_ADMIN = "ada@platform.example"

FEATURES = ("card_activity", "merchant_risk")
CHECKS = [
    (["payments", "training_sets", "fraud_detector"], "expectations"),
    (["payments", "training_sets", "fraud_detector"], "leakage"),
    (["payments", "features", "card_activity"], "expectations"),
    (["payments", "features", "merchant_risk"], "expectations"),
]


def report_checks(instance: dg.DagsterInstance, passed: bool = True, only: str | None = None):
    """Check results reported by hand (the UI's report-event action): runless events."""
    for path, name in CHECKS:
        if only and name != only:
            continue
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=dg.AssetKey(path), check_name=name, passed=passed)
        )


def stand_ins(
    mlflow: MlflowResource,
    name: str,
    metrics: dict[str, float],
    checks: dict[str, bool],
    artifact: bool = True,
) -> list[dg.AssetsDefinition]:
    """The platform's assets of one model as the event log sees them: same keys, deps, checks
    and metadata; the model asset registers a real MLflow version."""
    tenant, model = name.split(".")
    feature_keys = [dg.AssetKey([tenant, "features", f]) for f in FEATURES]
    ts_key = dg.AssetKey([tenant, "training_sets", model])
    model_key = dg.AssetKey([tenant, "models", model])
    eval_key = dg.AssetKey([tenant, "evaluation_reports", model])
    data_version = uuid.uuid4().hex[:16]

    def feature(key: dg.AssetKey):
        @dg.asset(key=key, check_specs=[dg.AssetCheckSpec("expectations", asset=key)])
        def _feature():
            return dg.MaterializeResult(
                data_version=dg.DataVersion(uuid.uuid4().hex[:16]),
                check_results=[
                    dg.AssetCheckResult(
                        check_name="expectations", passed=checks.get(f"{key.path[-1]}", True)
                    )
                ],
            )

        return _feature

    @dg.asset(
        key=ts_key,
        deps=feature_keys,
        check_specs=[
            dg.AssetCheckSpec("expectations", asset=ts_key),
            dg.AssetCheckSpec("leakage", asset=ts_key),
        ],
    )
    def training_set():
        return dg.MaterializeResult(
            data_version=dg.DataVersion(data_version),
            metadata={"data_version": data_version},
            check_results=[
                dg.AssetCheckResult(check_name=c, passed=checks.get(c, True))
                for c in ("expectations", "leakage")
            ],
        )

    @dg.asset(key=model_key, deps=[ts_key])
    def model_asset():
        client = mlflow.client()
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        experiment = mlflow.ensure_experiment(f"{tenant}/{model}")
        run = client.create_run(experiment)
        # Each version its own files, so each has its own content hash.
        source = Path(mlflow.artifact_root) / name / run.info.run_id
        source.mkdir(parents=True, exist_ok=True)
        (source / "MLmodel").write_text(f"run_id: {run.info.run_id}\n")
        mv = client.create_model_version(name, source.as_uri(), run_id=run.info.run_id)
        return dg.MaterializeResult(
            metadata={
                "registered_model": name,
                "model_version": int(mv.version),
                "mlflow_run_id": run.info.run_id,
                "training_set_version": data_version,
                **({"artifact_sha256": artifact_digest(source)} if artifact else {}),
            }
        )

    @dg.asset(key=eval_key, deps=[model_key, ts_key])
    def evaluation_report(context):
        event = context.instance.get_latest_materialization_event(model_key)
        return dg.MaterializeResult(
            metadata={
                "registered_model": name,
                "model_version": event.asset_materialization.metadata["model_version"].value,
                "model_run_id": event.run_id,
                "metrics": dg.MetadataValue.json(metrics),
            }
        )

    return [*(feature(k) for k in feature_keys), training_set, model_asset, evaluation_report]


@dataclass
class Sandbox:
    instance: dg.DagsterInstance
    mlflow: MlflowResource
    store: GovernanceStore
    catalogs: dict[str, TenantCatalog]
    deploy_dir: Path
    observations: list[dg.AssetObservation]
    last_run_id: str = ""
    # version -> the artifact hash its model materialization recorded
    artifacts: dict[int, str] = field(default_factory=dict)

    def emit(self, observation: dg.AssetObservation) -> None:
        """Observations go to the list (for assertions) and to the instance (published heads)."""
        self.observations.append(observation)
        self.instance.report_runless_asset_event(observation)

    def governance(self, catalogs: dict[str, TenantCatalog] | None = None) -> Governance:
        return Governance(
            self.store,
            self.mlflow,
            instance=self.instance,
            catalogs=catalogs or self.catalogs,
            admins=[PLATFORM_ADMIN],
            emit=self.emit,
            deploy_dir=self.deploy_dir,
        )

    def register(
        self,
        average_precision: float,
        roc_auc: float = 0.8,
        launched_by: str | None = LAUNCHER,
        checks: dict[str, bool] | None = None,
        name: str = MODEL,
        tags: dict[str, str] | None = None,
        artifact: bool = True,
    ) -> int:
        """A new version of `name`, trained and evaluated by one real Dagster run launched by
        `launched_by`; `checks` fails some (`leakage`, `expectations`, a feature view name);
        without `artifact`, the model materialization records no artifact hash."""
        metrics = {"average_precision": average_precision, "roc_auc": roc_auc}
        run_tags = dict(tags or {})
        if launched_by:
            run_tags["mlplat/launched_by"] = launched_by
        result = dg.materialize(
            stand_ins(self.mlflow, name, metrics, checks or {}, artifact),
            instance=self.instance,
            tags=run_tags,
        )
        assert result.success
        self.last_run_id = result.run_id
        model_key = dg.AssetKey([*name.split(".")[:1], "models", name.split(".")[1]])
        (mat,) = [
            e.materialization
            for e in result.get_asset_materialization_events()
            if e.asset_key == model_key
        ]
        version = int(mat.metadata["model_version"].value)
        if artifact:
            self.artifacts[version] = mat.metadata["artifact_sha256"].value
        return version

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
    yield Sandbox(instance, session_mlflow, store, load_all(), data / "deploy", [])
    store.dispose()
    instance.dispose()


@pytest.fixture
def idp(tmp_path, monkeypatch):
    """An identity provider of the test's own (an EC key it generates); the platform points at
    it through the environment, as at a real IdP."""
    from platform_assets.governance.demo_idp import LocalIdP

    provider = LocalIdP(tmp_path / "idp")
    for k, v in provider.env().items():
        monkeypatch.setenv(k, v)
    return provider


@pytest.fixture
def cli_sandbox(gov_sandbox, monkeypatch) -> Sandbox:
    """The sandbox behind the `mlplat` governance commands."""
    from platform_assets.governance import service

    monkeypatch.setattr(service, "deployment_governance", gov_sandbox.governance)
    monkeypatch.setattr(service, "dagster_instance", lambda: gov_sandbox.instance)
    monkeypatch.delenv("MLPLAT_USER", raising=False)
    return gov_sandbox


@pytest.fixture
def defs(gov_sandbox) -> dg.Definitions:
    """The promotion sensor and governance jobs, on the sandbox's MLflow."""
    return dg.Definitions(
        assets=[dg.AssetSpec(REPORT, tags={"asset_type": "evaluation_report"})],
        jobs=[promote_model, rollback_model],
        sensors=[promotion_sensor],
        resources={"mlflow": gov_sandbox.mlflow},
    )


def sensor_context(sb: Sandbox, defs: dg.Definitions, cursor: str | None):
    return dg.build_sensor_context(
        instance=sb.instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
    )


def tick(sb: Sandbox, defs: dg.Definitions, cursor: str | None):
    """One tick: its SkipReason or run requests, and its cursor. The judgements it returns are
    recorded on the instance, as the daemon records them."""
    with sensor_context(sb, defs, cursor) as context:
        result = promotion_sensor(context)
        for event in result.asset_events:
            sb.instance.report_runless_asset_event(event)
        return result.skip_reason or result.run_requests, context.cursor


def judgements(instance: dg.DagsterInstance, key: dg.AssetKey = REPORT) -> list[tuple]:
    """(evaluation event, outcome, reason) of every judgement recorded on `key`, oldest first."""
    records = instance.fetch_observations(key, limit=1000, ascending=True).records
    return [
        (md[EVENT].value, md[OUTCOME].value, md[REASON].value)
        for md in (r.asset_observation.metadata for r in records)
        if OUTCOME in md
    ]
