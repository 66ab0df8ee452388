"""Deterministic demo data for the three demo tenants, with signal planted for the models to find.

Each dataset is a pure function of its name and seed. Rows arrive the way real event data does:
some late (ingested days after the event), some duplicated, some with nulls, and out of order,
so that data-quality checks and point-in-time joins have something to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import numpy as np
    import pandas as pd


START = "2026-01-01"  # the first day of every generated dataset
DAYS = 90
SEED = 20260101


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def _event_times(rng: np.random.Generator, day: np.ndarray) -> pd.DatetimeIndex:
    import pandas as pd

    seconds = rng.integers(0, 86_400, size=len(day))
    return pd.Timestamp(START) + pd.to_timedelta(day, unit="D") + pd.to_timedelta(seconds, unit="s")


def _mess(rng: np.random.Generator, df: pd.DataFrame, ts: str, nullable: list[str]) -> pd.DataFrame:
    """Late arrivals (2%), exact duplicates (0.5%), nulls (2% per column), shuffled order."""
    import numpy as np
    import pandas as pd

    n = len(df)
    delay = pd.to_timedelta(rng.integers(60, 3_600, size=n), unit="s")
    late = rng.random(n) < 0.02
    delay = delay.where(~late, pd.to_timedelta(rng.integers(1, 5, size=n), unit="D"))
    df["ingested_at"] = df[ts] + delay
    for col in nullable:
        df[col] = df[col].where(rng.random(n) >= 0.02)
    dupes = df.sample(frac=0.005, random_state=int(rng.integers(1 << 31)))
    df = pd.concat([df, dupes], ignore_index=True)
    # Mostly ordered by ingestion, as files land, with local disorder in event time.
    jitter = pd.to_timedelta(rng.integers(0, 6 * 3_600, size=len(df)), unit="s")
    return df.iloc[np.argsort((df["ingested_at"] + jitter).to_numpy(), kind="stable")].reset_index(
        drop=True
    )


def _label_rows(
    rng: np.random.Generator, n_entities: int, per_entity: int, first_day: int
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    import numpy as np

    ids = np.repeat(np.arange(n_entities), per_entity)
    day = rng.integers(first_day, DAYS, size=len(ids))
    return ids, _event_times(rng, day)


# --- ride-hailing: driver activity -> driver churn ------------------------------------------


def _ridehail(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    import numpy as np
    import pandas as pd

    n_drivers, n_zones = 800, 12
    engagement = rng.normal(size=n_drivers)
    home_zone = rng.integers(0, n_zones, size=n_drivers)
    zone_health = rng.normal(size=n_zones)
    trips_per_day = np.exp(0.3 + 0.5 * engagement)
    counts = rng.poisson(np.outer(trips_per_day, np.ones(DAYS)))
    driver_idx, day = np.nonzero(counts)
    reps = counts[driver_idx, day]
    driver_idx, day = np.repeat(driver_idx, reps), np.repeat(day, reps)
    n = len(driver_idx)
    zone = np.where(rng.random(n) < 0.8, home_zone[driver_idx], rng.integers(0, n_zones, size=n))
    trips = pd.DataFrame(
        {
            "trip_id": [f"t{i:07d}" for i in range(n)],
            "driver_id": [f"d{i:04d}" for i in driver_idx],
            "zone_id": [f"z{i:02d}" for i in zone],
            "event_ts": _event_times(rng, day),
            "fare": np.round(rng.gamma(4.0, 4.0 + zone_health[zone].clip(-2, 2)), 2),
            "rating": np.clip(
                np.round(4.5 + 0.25 * engagement[driver_idx] + rng.normal(0, 0.4, n), 1), 1, 5
            ),
            "cancelled": rng.random(n) < _sigmoid(-2.5 - 0.8 * engagement[driver_idx]),
        }
    )
    trips = _mess(rng, trips, "event_ts", ["rating", "fare"])
    ids, ts = _label_rows(rng, n_drivers, 3, 21)
    p = _sigmoid(-0.8 - 1.4 * engagement[ids] - 0.7 * zone_health[home_zone[ids]])
    labels = pd.DataFrame(
        {
            "driver_id": [f"d{i:04d}" for i in ids],
            "zone_id": [f"z{i:02d}" for i in home_zone[ids]],
            "label_ts": ts,
            "churned": (rng.random(len(ids)) < p).astype("int64"),
        }
    )
    return {"trips": trips, "driver_churn_labels": labels}


# --- payments: transactions -> fraud ---------------------------------------------------------


def _payments(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    import numpy as np
    import pandas as pd

    n_cards, n_merchants = 2_000, 150
    card_risk = rng.normal(size=n_cards)
    merchant_risk = rng.normal(size=n_merchants)
    per_day = np.exp(-0.4 + 0.4 * card_risk)
    counts = rng.poisson(np.outer(per_day, np.ones(DAYS)))
    card_idx, day = np.nonzero(counts)
    reps = counts[card_idx, day]
    card_idx, day = np.repeat(card_idx, reps), np.repeat(day, reps)
    n = len(card_idx)
    merchant = rng.integers(0, n_merchants, size=n)
    amount = np.round(np.exp(rng.normal(3.2 + 0.45 * card_risk[card_idx], 0.8)), 2)
    ts = _event_times(rng, day)
    night = np.asarray(ts.hour < 6)
    fraud_logit = -4.2 + 1.3 * card_risk[card_idx] + 1.2 * merchant_risk[merchant] + 0.8 * night
    txns = pd.DataFrame(
        {
            "txn_id": [f"x{i:07d}" for i in range(n)],
            "card_id": [f"c{i:05d}" for i in card_idx],
            "merchant_id": [f"m{i:03d}" for i in merchant],
            "event_ts": ts,
            "amount": amount,
            "declined": rng.random(n) < _sigmoid(-3.0 + 0.9 * merchant_risk[merchant]),
            "is_fraud": (rng.random(n) < _sigmoid(fraud_logit)).astype("int64"),
        }
    )
    labels = (
        txns.loc[txns["event_ts"] >= pd.Timestamp(START) + pd.Timedelta(days=14)]
        .sample(n=12_000, random_state=7)
        .rename(columns={"event_ts": "label_ts"})[
            ["txn_id", "card_id", "merchant_id", "label_ts", "amount", "is_fraud"]
        ]
        .reset_index(drop=True)
    )
    txns = _mess(rng, txns.drop(columns=["is_fraud"]), "event_ts", ["amount", "merchant_id"])
    return {"transactions": txns, "fraud_labels": labels}


# --- growth: user events -> subscription churn ----------------------------------------------


def _growth(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    import numpy as np
    import pandas as pd

    n_users, channels = 3_000, ["organic", "paid_search", "social", "referral", "email", "tv"]
    engagement = rng.normal(size=n_users)
    channel = rng.integers(0, len(channels), size=n_users)
    channel_quality = np.array([0.6, -0.2, -0.7, 0.9, 0.2, -0.4])
    per_day = np.exp(-0.2 + 0.6 * engagement + 0.3 * channel_quality[channel])
    counts = rng.poisson(np.outer(per_day, np.ones(DAYS)))
    user_idx, day = np.nonzero(counts)
    reps = counts[user_idx, day]
    user_idx, day = np.repeat(user_idx, reps), np.repeat(day, reps)
    n = len(user_idx)
    kinds = np.array(["session", "feature_use", "purchase"])
    p_purchase = _sigmoid(-3.0 + 0.7 * engagement[user_idx])
    u = rng.random(n)
    kind = np.where(u < p_purchase, 2, np.where(u < 0.45, 1, 0))
    events = pd.DataFrame(
        {
            "event_id": [f"e{i:07d}" for i in range(n)],
            "user_id": [f"u{i:05d}" for i in user_idx],
            "channel_id": [channels[i] for i in channel[user_idx]],
            "event_ts": _event_times(rng, day),
            "event_type": kinds[kind],
            "duration_s": np.round(rng.gamma(2.0, 60 + 30 * engagement[user_idx].clip(-1.5, 3)), 1),
        }
    )
    events = _mess(rng, events, "event_ts", ["duration_s"])
    ids, ts = _label_rows(rng, n_users, 2, 21)
    p = _sigmoid(-0.6 - 1.3 * engagement[ids] - 0.8 * channel_quality[channel[ids]])
    labels = pd.DataFrame(
        {
            "user_id": [f"u{i:05d}" for i in ids],
            "channel_id": [channels[i] for i in channel[ids]],
            "label_ts": ts,
            "churned": (rng.random(len(ids)) < p).astype("int64"),
        }
    )
    return {"events": events, "subscription_labels": labels}


DOMAINS: dict[str, Callable[[np.random.Generator], dict[str, pd.DataFrame]]] = {
    "ridehail": _ridehail,
    "payments": _payments,
    "growth": _growth,
}


def available() -> list[str]:
    return [f"{domain}.{name}" for domain in DOMAINS for name in _names(domain)]


def _names(domain: str) -> list[str]:
    return {
        "ridehail": ["trips", "driver_churn_labels"],
        "payments": ["transactions", "fraud_labels"],
        "growth": ["events", "subscription_labels"],
    }[domain]


def generate(dataset: str, seed: int = SEED) -> pd.DataFrame:
    """One dataset, e.g. 'ridehail.trips'. The same name and seed always give the same rows."""
    import numpy as np

    domain, _, name = dataset.partition(".")
    if domain not in DOMAINS or name not in _names(domain):
        raise ValueError(f"unknown generator {dataset!r}; available: {', '.join(available())}")
    # Every dataset of a domain comes from one draw so labels and events share latent traits.
    tables = DOMAINS[domain](np.random.default_rng([seed, sum(map(ord, domain))]))
    return tables[name]
