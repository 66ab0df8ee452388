"""The demo data is deterministic and as messy as real event data."""

from __future__ import annotations

import pandas as pd
import pytest

from platform_assets.data.generator import available, generate


def test_same_name_same_rows():
    pd.testing.assert_frame_equal(generate("growth.events"), generate("growth.events"))


@pytest.mark.parametrize("dataset", ["ridehail.trips", "payments.transactions", "growth.events"])
def test_events_contain_what_real_data_contains(dataset):
    df = generate(dataset)
    assert df.duplicated().sum() > 0, "duplicate rows"
    assert df.isna().any().any(), "nulls"
    assert not df["event_ts"].is_monotonic_increasing, "out-of-order timestamps"
    late = df["ingested_at"] - df["event_ts"] > pd.Timedelta(days=1)
    assert late.mean() > 0.01, "late-arriving rows"


def test_unknown_dataset_names_the_choices():
    with pytest.raises(
        ValueError, match="unknown generator 'ridehail.cars'; available: ridehail.trips"
    ):
        generate("ridehail.cars")


def test_every_dataset_generates():
    for name in available():
        assert len(generate(name)) > 1000
