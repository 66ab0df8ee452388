"""Rollups equal a brute-force sum of the recorded steps, from memory and from the event log."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platform_assets.cost.rollup import (
    StepCost,
    ledger_frame,
    month_bounds,
    rollup,
    rollup_frame,
    tenant_steps,
)
from tests.cost.conftest import record_step

T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()

steps_strategy = st.lists(
    st.builds(
        StepCost,
        tenant=st.sampled_from(["payments", "growth", "ridehail"]),
        asset_key=st.sampled_from(["a/sources/x", "a/features/y", "a/models/z"]),
        partition=st.just(""),
        run_id=st.uuids().map(str),
        timestamp=st.floats(T0, T0 + 40 * 86400),
        usd=st.floats(0, 1000, allow_nan=False),
        cpu_seconds=st.floats(0, 1e5, allow_nan=False),
        wall_seconds=st.floats(0, 1e5, allow_nan=False),
        peak_memory_gib=st.floats(0, 64, allow_nan=False),
    ),
    max_size=200,
)


def brute_force(steps: list[StepCost]) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = defaultdict(float)
    for s in steps:
        day = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=s.timestamp)).date()
        out[(s.tenant, s.asset_key, day.isoformat())] += s.usd
    return dict(out)


@settings(max_examples=60, deadline=None)
@given(steps_strategy)
def test_rollup_equals_brute_force(steps):
    expected = brute_force(steps)
    assert rollup(steps).keys() == expected.keys()
    for key, usd in rollup(steps).items():
        assert usd == pytest.approx(expected[key])
    if steps:
        frame = rollup_frame(ledger_frame(steps))
        got = {(r.tenant, r.asset_key, r.day): r.usd for r in frame.itertuples()}
        assert got.keys() == expected.keys()
        for key, usd in got.items():
            assert usd == pytest.approx(expected[key])
        assert frame["steps"].sum() == len(steps)


def test_event_log_rollup_equals_recorded_steps(instance):
    recorded = {"payments": [0.5, 1.25, 2.0], "growth": [0.75], "ridehail": [3.0, 0.01]}
    for tenant, amounts in recorded.items():
        for i, usd in enumerate(amounts):
            record_step(instance, tenant, usd, asset=f"s{i % 2}")
    start, end = month_bounds(datetime.now(UTC).strftime("%Y-%m"))
    steps = tenant_steps(instance, start, end)
    assert len(steps) == sum(len(a) for a in recorded.values())
    for tenant, amounts in recorded.items():
        got = sum(s.usd for s in steps if s.tenant == tenant)
        assert got == pytest.approx(sum(amounts))
        only = tenant_steps(instance, start, end, tenant)
        assert {s.tenant for s in only} == {tenant}


def test_bad_month_is_refused():
    with pytest.raises(ValueError, match="must look like YYYY-MM"):
        month_bounds("2026/11")
    assert month_bounds("2026-12")[1] == datetime(2027, 1, 1, tzinfo=UTC)


def _day_totals(frame) -> dict[tuple[str, str], float]:
    return {k: round(v, 6) for k, v in frame.groupby(["tenant", "day"])["usd"].sum().items()}


def test_ledger_between_reads_closed_days_from_files_and_the_rest_from_the_event_log(
    instance, tmp_path
):
    import os
    import random

    import pyarrow as pa

    from bench.scale_bench import record_in_event_log
    from platform_assets.cost.rollup import LEDGER_COLUMNS, ledger_between
    from platform_assets.resources.lake import LakeResource

    rng = random.Random(3)
    start = datetime(2026, 11, 3, tzinfo=UTC)
    end = start + timedelta(days=4)
    tenants = [rng.choice(["payments", "growth"]) for _ in range(300)]
    steps = [
        StepCost(
            tenant=tenants[i],
            asset_key=f"{tenants[i]}/sources/y",
            partition="",
            run_id=f"r{i}",
            timestamp=(start + timedelta(hours=rng.uniform(-30, 4 * 24 + 30))).timestamp(),
            usd=round(rng.uniform(0.01, 2.0), 6),
            cpu_seconds=1.0,
            wall_seconds=1.0,
            peak_memory_gib=0.5,
        )
        for i in range(300)
    ]
    record_in_event_log(instance, steps)
    inside = ledger_frame([s for s in steps if start.timestamp() <= s.timestamp < end.timestamp()])
    expected = _day_totals(inside)

    lake = LakeResource(root=str(tmp_path / "lake"))
    tenants = ["growth", "payments"]
    assert _day_totals(ledger_between(instance, lake, tenants, start, end)) == expected

    def write(tenant: str, day: str, usd: float) -> str:
        rows = inside[(inside["tenant"] == tenant) & (inside["day"] == day)].copy()
        rows["usd"] = usd / len(rows)
        table = pa.Table.from_pandas(rows[LEDGER_COLUMNS], preserve_index=False)
        return lake.write(tenant, "cost_ledger", day, table).uri

    # A closed ledger snapshot is the record for its day (written long after the day ended)...
    write("payments", "2026-11-04", 100.0)
    # ...but one written before its day ended may miss later steps: the event log is read.
    stale = write("growth", "2026-11-05", 999.0)
    os.utime(stale, (start.timestamp(), start.timestamp()))
    got = _day_totals(ledger_between(instance, lake, tenants, start, end))
    assert got == {**expected, ("payments", "2026-11-04"): 100.0}
