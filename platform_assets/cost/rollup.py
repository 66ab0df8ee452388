"""Sums the cost metadata recorded on a tenant's materializations from the Dagster event log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

COST_KEY = "cost/usd"


@dataclass(frozen=True)
class StepCost:
    asset_key: str
    run_id: str
    timestamp: float
    usd: float
    cpu_seconds: float
    wall_seconds: float


def _value(metadata: dict, key: str) -> float:
    entry = metadata.get(key)
    return float(entry.value) if entry is not None else 0.0


def step_costs(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey], start: datetime, end: datetime
) -> list[StepCost]:
    """Every recorded step of `keys` with start <= time < end that carries cost metadata."""
    out = []
    for key in keys:
        cursor = None
        while True:
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=key,
                    after_timestamp=start.timestamp(),
                    before_timestamp=end.timestamp(),
                ),
                limit=1000,
                cursor=cursor,
            )
            for record in result.records:
                mat = record.asset_materialization
                if mat is None or COST_KEY not in mat.metadata:
                    continue
                out.append(
                    StepCost(
                        asset_key=key.to_user_string(),
                        run_id=record.run_id,
                        timestamp=record.timestamp,
                        usd=_value(mat.metadata, COST_KEY),
                        cpu_seconds=_value(mat.metadata, "cost/cpu_seconds"),
                        wall_seconds=_value(mat.metadata, "cost/wall_seconds"),
                    )
                )
            if not result.has_more:
                break
            cursor = result.cursor
    return out
