"""Batch scores are predictions: the champion scores the entities of the training set's most
recent window on their features as of the newest feature row (Feast's point-in-time join over
the committed feature snapshots), never with a drifted MLflow alias."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from platform_assets.monitoring.batch_scores import batch_scores_asset
from platform_assets.resources.feature_store import FeastResource
from platform_assets.resources.pricing import PricingResource
from tests.governance.conftest import MODEL
from tests.monitoring.conftest import FEATURES, feature_frame

pytestmark = pytest.mark.materialize
CARD = ["card_txns_7d", "card_avg_amount_7d", "card_merchants_7d", "card_night_share_7d"]
MERCHANT = ["merchant_decline_rate_7d", "merchant_avg_amount_7d"]
NEWEST = pd.Timestamp("2026-01-29", tz="UTC")


def write_feature_tables(
    lake, feast, catalog, cards: list[str], merchants: list[str], stale: str
) -> dict:
    """Two daily rows per card and merchant; card `stale`'s latest is older than the 7-day TTL.
    Each view is applied over its snapshot, as the feature-set asset does."""
    from platform_assets.features.feast_objects import feature_view
    from platform_assets.features.offline_store import layout_for_join

    rng = np.random.default_rng(7)
    frames = {}
    for view, key, names, ids in [
        ("card_activity", "card_id", CARD, cards),
        ("merchant_risk", "merchant_id", MERCHANT, merchants),
    ]:
        rows = []
        for day in (NEWEST - pd.Timedelta(days=3), NEWEST):
            values = feature_frame(rng, len(ids))[names]
            rows.append(values.assign(**{key: ids, "event_timestamp": day}))
        df = pd.concat(rows, ignore_index=True)
        if view == "card_activity":
            df = df[~((df["card_id"] == stale) & (df["event_timestamp"] == NEWEST))]
            df.loc[df["card_id"] == stale, "event_timestamp"] = NEWEST - pd.Timedelta(days=20)
            for name in ("card_txns_7d", "card_merchants_7d"):
                df[name] = df[name].astype("int64")
        df["created_timestamp"] = df["event_timestamp"]
        df[f"{view}_ts"] = df["event_timestamp"]
        fs = catalog.feature_sets[view]
        table = layout_for_join(
            pa.Table.from_pandas(df, preserve_index=False),
            [key],
            "event_timestamp",
            "created_timestamp",
        )
        snap = lake.write("payments", "features", view, table)
        feast.store("payments").apply(
            list(feature_view("payments", catalog.tenant.owners[0], fs, snap.uri))
        )
        frames[view] = df
    return frames


def test_champion_scores_current_entities_on_point_in_time_features(monitored, tmp_path):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    m, sb = monitored, monitored.sb
    training = m.lake.read("payments", "training_sets", "fraud_detector").to_pandas()
    recent = training[
        training["event_timestamp"] >= training["event_timestamp"].max() - pd.Timedelta(days=7)
    ]
    expected_entities = set(map(tuple, recent[["card_id", "merchant_id"]].to_numpy()))
    cards = sorted({c for c, _ in expected_entities})
    merchants = sorted({mm for _, mm in expected_entities})
    stale = cards[0]
    feast = FeastResource(root=str(tmp_path / "feast"))
    frames = write_feature_tables(m.lake, feast, m.catalog, cards, merchants, stale)

    # Attack: MLflow's alias moved to a version the platform never promoted.
    with mlflow.start_run():
        other = mlflow.sklearn.log_model(
            LogisticRegression().fit(training[list(FEATURES)], 1 - training["is_fraud"]),
            name="model",
            registered_model_name=MODEL,
            pip_requirements=["scikit-learn"],
        )
    pending = int(other.registered_model_version)
    sb.mlflow.client().set_registered_model_alias(MODEL, "champion", str(pending))

    asset = batch_scores_asset(m.catalog.tenant, m.spec, m.resolved, m.catalog.tenant.resources)
    tags = asset.tags_by_key[asset.key]
    assert (tags["tenant"], tags["asset_type"], tags["artefact"]) == (
        "payments",
        "predictions",
        "batch_scores",
    )
    result = dg.materialize(
        [asset],
        resources={
            "lake": m.lake,
            "feast": feast,
            "mlflow": sb.mlflow,
            "pricing": PricingResource(),
        },
        instance=sb.instance,
    )
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["champion_version"].value == m.champion
    assert md["alias_drift"].value == (
        f"MLflow alias {MODEL}@champion points at v{pending} but the platform's champion is "
        f"v{m.champion}; scoring and serving use the platform's"
    )
    assert md["features_as_of"].value == NEWEST.timestamp()

    scores = m.lake.read("payments", "predictions", "fraud_detector").to_pandas()
    assert list(scores.columns[:5]) == [
        "card_id",
        "merchant_id",
        "event_timestamp",
        "score",
        "model_version",
    ]
    assert set(map(tuple, scores[["card_id", "merchant_id"]].to_numpy())) == expected_entities
    assert (scores["event_timestamp"] == NEWEST).all()
    assert set(scores["model_version"]) == {m.champion}
    # Features as of NEWEST: each entity's latest row within the TTL, none for the stale card.
    card = frames["card_activity"]
    latest = card[card["event_timestamp"] == NEWEST].set_index("card_id")
    row = scores[scores["card_id"] != stale].iloc[0]
    assert row["card_avg_amount_7d"] == pytest.approx(
        latest.loc[row["card_id"], "card_avg_amount_7d"]
    )
    assert scores.loc[scores["card_id"] == stale, CARD].isna().all(axis=None)
    assert scores.loc[scores["card_id"] == stale, MERCHANT].notna().all(axis=None)
    # The champion's scores of exactly those features.
    assert scores["score"].to_numpy() == pytest.approx(
        m.model.predict_proba(scores[list(FEATURES)])[:, 1]
    )


def test_a_champion_replaced_in_mlflow_is_refused_and_nothing_is_scored(monitored, tmp_path):
    m = monitored
    refusal = m.replace_artifact()
    asset = batch_scores_asset(m.catalog.tenant, m.spec, m.resolved, m.catalog.tenant.resources)
    message = m.refused(asset, feast=FeastResource(root=str(tmp_path / "feast")))
    assert message == f"platform_assets.models.artifacts.ArtifactRefused: {refusal}\n"
    with pytest.raises(FileNotFoundError):
        m.lake.read("payments", "predictions", "fraud_detector")
