"""A model with a champion on a temp lake and registry, and its request log in the agreed shape
(INTERFACES.md), for the drift asset's tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bench.served_tenant import artifact_folder, record_champion, register_sklearn
from platform_assets.models.artifacts import artifact_digest
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.catalog import check_model_refs
from tests.governance.conftest import MODEL, Sandbox, gov_sandbox, session_mlflow  # noqa: F401

FEATURES = {
    "card_txns_7d": lambda rng, n: rng.poisson(6, n).astype("float64"),
    "card_avg_amount_7d": lambda rng, n: rng.lognormal(3, 0.5, n),
    "card_merchants_7d": lambda rng, n: rng.poisson(3, n).astype("float64"),
    "card_night_share_7d": lambda rng, n: rng.beta(1, 6, n),
    "merchant_decline_rate_7d": lambda rng, n: rng.beta(2, 30, n),
    "merchant_avg_amount_7d": lambda rng, n: rng.lognormal(3.2, 0.3, n),
}


def feature_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({name: draw(rng, n) for name, draw in FEATURES.items()})


@dataclass
class Monitored:
    sb: Sandbox
    lake: LakeResource
    catalog: object
    spec: object
    resolved: dict
    model: object
    champion: int
    training_set_version: str
    artifact_sha256: str  # the champion's, as the platform recorded it

    def replace_artifact(self) -> str:
        """The champion's model file in MLflow's artifact store overwritten with another
        model's, behind the platform's back; returns the refusal every loader must give."""
        import skops.io
        from sklearn.dummy import DummyClassifier

        folder = artifact_folder(self.sb.mlflow, MODEL, self.champion)
        other = DummyClassifier(strategy="prior").fit(np.zeros((2, len(FEATURES))), [0, 1])
        (folder / "model.skops").write_bytes(skops.io.dumps(other))
        return (
            f"{MODEL} v{self.champion}: artifact refused: its files hash to sha256 "
            f"{artifact_digest(folder)[:12]}..., not the {self.artifact_sha256[:12]}... the "
            "platform recorded when it registered the version (changed in MLflow since); not "
            "loaded"
        )

    def refused(self, asset, **resources) -> str:
        """Materialize `asset`, which must fail; the message of the error that failed it."""
        result = dg.materialize(
            [asset],
            resources={
                "lake": self.lake,
                "mlflow": self.sb.mlflow,
                "pricing": PricingResource(),
                **resources,
            },
            instance=self.sb.instance,
            raise_on_error=False,
        )
        assert not result.success
        assert not result.get_asset_materialization_events()
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        return failure.step_failure_data.error.cause.message

    def request_log(self, features: pd.DataFrame, predictions=None, version=None, ago_days=0.0):
        """Append one batch of logged requests, one row per entity, as serving writes them."""
        n = len(features)
        ts = datetime.now(UTC) - timedelta(days=ago_days)
        scores = (
            self.model.predict_proba(features[list(FEATURES)])[:, 1]
            if predictions is None
            else predictions
        )
        version = self.champion if version is None else version
        table = pa.table(
            {
                "request_id": pa.array([uuid.uuid4().hex for _ in range(n)]),
                "ts": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
                "tenant": pa.array(["payments"] * n),
                "model": pa.array(["fraud_detector"] * n),
                "model_version": pa.array([version] * n, pa.int64()),
                "status": pa.array([200] * n, pa.int32()),
                "error": pa.array([None] * n, pa.string()),
                "latency_ms": pa.array(np.full(n, 3.0)),
                "prediction": pa.array(scores, pa.float64()),
                "features_as_of": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
                "card_id": pa.array([f"c{i}" for i in range(n)]),
                "merchant_id": pa.array([f"m{i % 50}" for i in range(n)]),
                **{name: pa.array(features[name].to_numpy(), pa.float64()) for name in FEATURES},
            }
        )
        self.lake.append("payments", "serving", "fraud_detector", table)


@pytest.fixture
def monitored(gov_sandbox: Sandbox) -> Monitored:  # noqa: F811
    """payments.fraud_detector: a training set of generated features, a logistic regression
    trained on it, registered with its training-set version, and champion in the platform."""
    import mlflow

    from platform_assets.models.training import build_pipeline

    sb = gov_sandbox
    lake = LakeResource(root=str(sb.deploy_dir.parent / "lake"))
    catalog = sb.catalogs["payments"]
    spec = catalog.models["fraud_detector"]
    rng = np.random.default_rng(0)
    n = 4000
    df = feature_frame(rng, n)
    logit = 0.02 * (df["card_avg_amount_7d"] - 20) + 8 * df["merchant_decline_rate_7d"] - 2
    df.insert(0, "card_id", [f"c{i}" for i in range(n)])
    df.insert(1, "merchant_id", [f"m{i % 50}" for i in range(n)])
    df.insert(2, "event_timestamp", pd.date_range("2026-01-01", periods=n, freq="10min", tz="UTC"))
    df["card_activity_ts"] = df["event_timestamp"]
    df["merchant_risk_ts"] = df["event_timestamp"]
    df["is_fraud"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    df["split"] = np.where(np.arange(n) < 3000, "train", "test")
    snapshot = lake.write("payments", "training_sets", "fraud_detector", pa.Table.from_pandas(df))
    train = df[df["split"] == "train"]
    model = build_pipeline("logistic_regression", {}).fit(train[list(FEATURES)], train["is_fraud"])
    sb.mlflow.client()
    # This tracking store's own experiment: another test in this worker may have left its
    # store's experiment active in the mlflow module.
    # Created by the resource, so its artifacts land under the test's artifact root (MLflow's
    # own default is ./mlruns in the working directory).
    mlflow.set_experiment(experiment_id=sb.mlflow.ensure_experiment("payments-monitoring"))
    champion, digest = register_sklearn(sb.mlflow, MODEL, model, train[list(FEATURES)])
    sb.mlflow.client().set_model_version_tag(
        MODEL, str(champion), "training_set_version", snapshot.version
    )
    record_champion(sb.store, MODEL, champion, digest)
    return Monitored(
        sb,
        lake,
        catalog,
        spec,
        check_model_refs(catalog, spec),
        model,
        champion,
        snapshot.version,
        digest,
    )
