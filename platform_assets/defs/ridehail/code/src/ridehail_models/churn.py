"""Driver churn with LightGBM and a focal loss.

Churners are a minority, and most drivers are easy to call. The focal loss (Lin et al., 2017)
scales each row's log loss by (1 - p_t)^gamma, so the rows the model already gets right count
less and the hard ones more; `alpha` weighs the positive class. LightGBM takes it as a custom
objective: the gradient and hessian of the loss in the raw score, here by central differences.
A model trained with a custom objective predicts log-odds; the platform turns them into
probabilities with the logistic function (docs/trainers.md).
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from dagster_pipes import PipesContext  # provided by the platform in every trainer environment

STEP = 1e-4  # of the raw score, for the finite differences


def focal_loss(raw: np.ndarray, y: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    p = np.clip(1 / (1 + np.exp(-raw)), 1e-9, 1 - 1e-9)
    p_t = np.where(y == 1, p, 1 - p)
    a_t = np.where(y == 1, alpha, 1 - alpha)
    return -a_t * (1 - p_t) ** gamma * np.log(p_t)


def objective(alpha: float, gamma: float):
    def gradient_and_hessian(raw: np.ndarray, data: lgb.Dataset):
        y = data.get_label()
        here = focal_loss(raw, y, alpha, gamma)
        up, down = focal_loss(raw + STEP, y, alpha, gamma), focal_loss(raw - STEP, y, alpha, gamma)
        grad = (up - down) / (2 * STEP)
        # The loss is not convex everywhere; LightGBM needs a positive hessian.
        hess = np.maximum((up - 2 * here + down) / STEP**2, 1e-6)
        return grad, hess

    return gradient_and_hessian


def train(
    df: pd.DataFrame, *, label: str, features: list[str], params: dict[str, Any]
) -> lgb.Booster:
    """The platform's trainer contract: the training split (features and label), the label's
    name, the feature names and `trainer.params` from the model YAML; returns the model."""
    alpha, gamma = float(params.get("alpha", 0.5)), float(params.get("gamma", 2.0))
    rounds = int(params.get("num_boost_round", 150))
    context = PipesContext.get()
    context.log.info(
        f"focal loss (alpha {alpha}, gamma {gamma}), {rounds} rounds on {len(df)} rows, "
        f"churn rate {df[label].mean():.3f}"
    )
    booster = lgb.train(
        {
            "objective": objective(alpha, gamma),
            "learning_rate": float(params.get("learning_rate", 0.05)),
            "num_leaves": int(params.get("num_leaves", 15)),
            "min_data_in_leaf": int(params.get("min_data_in_leaf", 20)),
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "seed": 0,
            "verbose": -1,
        },
        lgb.Dataset(df[features], label=df[label], feature_name=list(features)),
        num_boost_round=rounds,
    )
    raw = booster.predict(df[features], raw_score=True)
    loss = float(focal_loss(raw, df[label].to_numpy(), alpha, gamma).mean())
    # Shown on the model's materialization as the team's own number; the platform evaluates
    # the model itself on the held-out split.
    context.report_asset_materialization(metadata={"train_focal_loss": round(loss, 6)})
    return booster
