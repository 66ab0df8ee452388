"""Asset check results the platform attaches to sources, feature tables and training sets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.quality.expectations import validate
from platform_assets.tenancy.specs import Expectation

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import pandas as pd


def _is_string(column: pd.Series) -> bool:
    # Object columns with nulls are still string columns; pandas' own check says no.
    import pandas as pd

    if pd.api.types.is_string_dtype(column):
        return True
    values = column.dropna()
    return column.dtype == object and bool(values.map(lambda v: isinstance(v, str)).all())


def _kinds() -> dict:
    import pandas as pd

    return {
        "string": _is_string,
        "int64": pd.api.types.is_integer_dtype,
        "float64": pd.api.types.is_numeric_dtype,
        "bool": pd.api.types.is_bool_dtype,
        "timestamp": pd.api.types.is_datetime64_any_dtype,
    }


def schema_check(df: pd.DataFrame, declared: dict[str, str]) -> dg.AssetCheckResult:
    missing = [c for c in declared if c not in df.columns]
    kinds = _kinds()
    wrong = {
        c: f"declared {t}, found {df[c].dtype}"
        for c, t in declared.items()
        if c in df.columns and not kinds[t](df[c])
    }
    problems = [f"column {c!r} is missing" for c in missing] + [
        f"column {c!r}: {why}" for c, why in wrong.items()
    ]
    return dg.AssetCheckResult(
        check_name="schema",
        passed=not problems,
        description="; ".join(problems) or "all declared columns present with their types",
        metadata={
            "missing_columns": dg.MetadataValue.json(missing),
            "wrong_types": dg.MetadataValue.json(wrong),
        },
    )


def expectation_check(
    df: pd.DataFrame, expectations: list[Expectation], name: str, check_name: str = "expectations"
) -> dg.AssetCheckResult:
    if not expectations:
        return dg.AssetCheckResult(
            check_name=check_name, passed=True, description="no expectations declared"
        )
    suite = validate(df, expectations, name)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not suite.blocking_failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=suite.summary(),
        metadata={
            "failed": len(suite.failed),
            "evaluated": len(suite.outcomes),
            "results": dg.MetadataValue.md(suite.markdown()),
            "failed_expectations": dg.MetadataValue.json(
                [
                    {
                        "expectation": o.label,
                        "unexpected_count": o.unexpected_count,
                        "error": o.error,
                        "sample_rows": o.sample_rows,
                    }
                    for o in suite.failed
                ]
            ),
        },
    )


def leakage_check(
    df: pd.DataFrame, label_ts: str, feature_ts_columns: list[str]
) -> dg.AssetCheckResult:
    """No feature row may be newer than the label it is joined to."""
    import pandas as pd

    label_time = pd.to_datetime(df[label_ts], utc=True)
    leaks: dict[str, int] = {}
    samples: list[dict[str, str]] = []
    for col in feature_ts_columns:
        feature_time = pd.to_datetime(df[col], utc=True)
        bad = feature_time.notna() & (feature_time > label_time)
        if bad.any():
            leaks[col] = int(bad.sum())
            samples += [
                {k: str(v) for k, v in r.items()}
                for r in df.loc[bad, [label_ts, col]].head(3).to_dict("records")
            ]
    desc = (
        "no feature timestamp is later than its label timestamp"
        if not leaks
        else "feature rows newer than the label: "
        + ", ".join(f"{c}: {n} rows" for c, n in leaks.items())
    )
    return dg.AssetCheckResult(
        check_name="leakage",
        passed=not leaks,
        description=desc,
        metadata={
            "leaking_rows": dg.MetadataValue.json(leaks),
            "sample_rows": dg.MetadataValue.json(samples),
            "checked_columns": dg.MetadataValue.json(feature_ts_columns),
        },
    )
