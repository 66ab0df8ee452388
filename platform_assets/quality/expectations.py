"""Runs the expectations a team declared in YAML with Great Expectations 1.x on a DataFrame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from platform_assets.tenancy.specs import Expectation

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    import pandas as pd

SAMPLE_ROWS = 5


@dataclass
class ExpectationOutcome:
    expectation: Expectation
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: Any = None
    sample_rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.expectation.kwargs.items())
        return f"{self.expectation.type}({args})"


@dataclass
class SuiteOutcome:
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def blocking_failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.failed if o.expectation.blocking]

    def markdown(self) -> str:
        lines = ["| expectation | result | unexpected | sample |", "|---|---|---|---|"]
        for o in self.outcomes:
            result = "pass" if o.success else ("FAIL" if o.expectation.blocking else "warn")
            unexpected = (
                o.error
                if o.error
                else (
                    f"{o.unexpected_count} ({o.unexpected_percent:.2f}%)"
                    if o.unexpected_count is not None
                    else f"observed {o.observed}"
                )
            )
            sample = "; ".join(str(r) for r in o.sample_rows[:2]).replace("|", "/")
            lines.append(f"| `{o.label}` | {result} | {unexpected} | {sample[:300]} |")
        return "\n".join(lines)

    def summary(self) -> str:
        if not self.failed:
            return f"all {len(self.outcomes)} expectations passed"
        parts = []
        for o in self.failed:
            detail = o.error or (
                f"{o.unexpected_count} unexpected rows"
                if o.unexpected_count is not None
                else f"observed {o.observed}"
            )
            parts.append(f"{o.label}: {detail}")
        return f"{len(self.failed)} of {len(self.outcomes)} expectations failed: " + "; ".join(
            parts
        )


def _gx_class(name: str):
    import great_expectations as gx

    return getattr(gx.expectations, "".join(p.capitalize() for p in name.split("_")))


def _sample(df: pd.DataFrame, result: dict[str, Any]) -> list[dict[str, Any]]:
    import pandas as pd

    index = result.get("partial_unexpected_index_list") or []
    rows = df.loc[[i for i in index if i in df.index][:SAMPLE_ROWS]]
    return [
        {k: (None if pd.isna(v) else str(v)) for k, v in r.items()} for r in rows.to_dict("records")
    ]


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX reports errors either flat or per metric; return the first message, one line."""
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message")).splitlines()[0]
    return None


def validate(df: pd.DataFrame, expectations: list[Expectation], name: str) -> SuiteOutcome:
    """Validate `df` against each expectation; a malformed expectation fails with its reason."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    df = df.reset_index(drop=True)
    context = gx.get_context(mode="ephemeral")
    # GX draws a progress bar per metric; in step logs that is noise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": df})
    )
    outcomes = []
    for spec in expectations:
        try:
            expectation = _gx_class(spec.type)(**spec.kwargs)
        except Exception as exc:  # GX's own validation names the bad or missing kwarg
            reason = " ".join(str(exc).split())
            outcomes.append(ExpectationOutcome(spec, False, error=f"invalid kwargs: {reason}"))
            continue
        result = batch.validate(expectation, result_format="SUMMARY")
        error = _exception_message(result.exception_info or {})
        if error is None and not result.success and spec.type == "expect_column_to_exist":
            error = (
                f"column {spec.kwargs.get('column')!r} is missing "
                f"(columns: {', '.join(map(str, df.columns))})"
            )
        if error is not None:
            outcomes.append(ExpectationOutcome(spec, False, error=error))
            continue
        body = dict(result.result or {})
        outcomes.append(
            ExpectationOutcome(
                spec,
                bool(result.success),
                unexpected_count=body.get("unexpected_count"),
                unexpected_percent=body.get("unexpected_percent"),
                observed=body.get("observed_value"),
                sample_rows=_sample(df, body) if not result.success else [],
            )
        )
    return SuiteOutcome(outcomes)
