"""The packed ASOF key: event time, created time and source row in one BIGINT (offsets, scaled
offsets on the data's time grid, or ranks), or a struct when they do not fit."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from platform_assets.features.offline_store.config import _SRC_ROW, _TS

# Raised by the join when a row is off the guessed grid.
_OFF_GRID = "__asof_off_grid"
# Stands for a null created time in rank pairs: before any real time (about 144,000 BC).
_NULL_CREATED = -(2**62)


def _bit_length(value: int) -> int:
    return max(1, int(value).bit_length())


class _Scaled(NamedTuple):
    base: int  # earliest event time
    step: int  # common divisor of event time - base
    d_lo: int  # smallest created - event time
    d_step: int  # common divisor of (created - event time) - d_lo
    d_bits: int  # width of the created field, 0 when there is no created time
    bits: int  # width of the event time and created fields together


def _scaled_fields(pair_t: np.ndarray, pair_c: np.ndarray, t_max: int) -> _Scaled | None:
    """The scaled-offset encoding of the (event time, created time) pairs that occur.

    Feature tables are usually written on a grid (hourly or daily snapshots) with created times
    a fixed lag after the event time, so in units of the grid step the offsets are small even
    when microsecond offsets over the window are not. Within one event time, created order is
    the order of created - event time, so that difference is what gets encoded.
    """
    if len(pair_t) == 0:
        return None
    base = int(pair_t.min())
    step = int(np.gcd.reduce(pair_t - base)) or 1
    # The probe's field for max(T) must fit as well as every feature row's.
    bits = _bit_length((t_max - base) // step + 1)
    known = pair_c != _NULL_CREATED
    if not known.any():
        return _Scaled(base, step, 0, 1, 0, bits)
    lag = pair_c[known] - pair_t[known]
    d_lo = int(lag.min())
    d_step = int(np.gcd.reduce(lag - d_lo)) or 1
    d_bits = _bit_length((int(lag.max()) - d_lo) // d_step + 1)
    return _Scaled(base, step, d_lo, d_step, d_bits, bits + d_bits)


def _guess_scaled(
    sample_t: np.ndarray,
    sample_c: np.ndarray,
    has_created: bool,
    ts_lo: int,
    t_max: int,
    c_lo: int,
    c_hi: int,
) -> _Scaled | None:
    """Grid steps guessed from a sample of the filtered rows, with field widths from bounds
    every row obeys (the time window, the created column's statistics); None without a grid.

    The join checks every row against the guess, so a sample that misses part of the grid
    costs time, never a wrong answer.
    """
    if len(sample_t) < 2:
        return None
    t0 = int(sample_t[0])
    step = int(np.gcd.reduce(np.abs(sample_t - t0)))
    if step <= 1:
        return None  # no grid coarser than a microsecond: the exact steps decide
    base = t0 - -(-(t0 - ts_lo) // step) * step  # the grid point at or below ts_lo
    t_bits = _bit_length((t_max - base) // step + 1)
    if not has_created:
        return _Scaled(base, step, 0, 1, 0, t_bits)
    known = sample_c != _NULL_CREATED
    if not known.any():
        return None
    lag = sample_c[known] - sample_t[known]
    d0 = int(lag[0])
    # A constant lag in the sample gives no step; the event grid's is a fair guess.
    d_step = int(np.gcd.reduce(np.abs(lag - d0))) or step
    lag_lo, lag_hi = c_lo - t_max, c_hi - ts_lo
    d_lo = d0 - -(-(d0 - lag_lo) // d_step) * d_step  # the lag grid point at or below lag_lo
    d_bits = _bit_length((lag_hi - d_lo) // d_step + 1)
    return _Scaled(base, step, d_lo, d_step, d_bits, t_bits + d_bits)


class _AsofKey(NamedTuple):
    """How both sides of the ASOF join compute their key."""

    feat: str  # SQL over a feature row `p`
    entity: str  # SQL over the entity relation, or _KEY when the relation carries the key
    # Turns a matched ASOF key back into the row's event time (microseconds), so the event time
    # need not ride through the join's sort as a column of its own; None for the struct key.
    decode: Callable[[np.ndarray], np.ndarray] | None
    # The low bits of a packed key that hold the source row number.
    rn_bits: int = 0
    join: str = ""  # a join the feature side needs (the rank table)
    entity_rel: str = "entity"


def _offset_key(ts_off: str, c_off: str, low: int, rn_bits: int, ts_lo: int) -> _AsofKey:
    probe = f"greatest(epoch_us({_TS}) - {ts_lo} + 1, 0)"
    return _AsofKey(
        feat=f"({ts_off} << {low}) + ({c_off} << {rn_bits}) + {_SRC_ROW}",
        entity=f"({probe} << {low}) + {(1 << low) - 1}",
        decode=lambda key: (key >> low) - 1 + ts_lo,
        rn_bits=rn_bits,
    )


def _scaled_key(scaled: _Scaled, rn_bits: int, ts_us: str, created: str, checked: bool) -> _AsofKey:
    """The scaled-offset key; `checked` makes a row off the guessed grid fail the query."""
    base, step, d_lo, d_step, d_bits, _ = scaled
    low = d_bits + rn_bits
    t_off = f"({ts_us} - ({base}))"
    lag = f"(epoch_us({created}) - {ts_us} - ({d_lo}))"
    feat = f"(({t_off} // {step} + 1) << {low}) + {_SRC_ROW}"
    if d_bits:
        feat += f" + (coalesce({lag} // {d_step} + 1, 0) << {rn_bits})"
    if checked:
        # A guess from a sample: every row must be on its grid and inside its field widths,
        # or the join stops with _OFF_GRID and is redone with exact steps.
        t_hi, d_hi = ((1 << (scaled.bits - d_bits)) - 2) * step, ((1 << d_bits) - 2) * d_step
        bad = [f"{t_off} % {step} <> 0", f"{t_off} NOT BETWEEN 0 AND {t_hi}"]
        if d_bits:
            bad += [f"{lag} % {d_step} <> 0", f"{lag} NOT BETWEEN 0 AND {d_hi}"]
        else:
            bad.append(f"{created} IS NOT NULL")
        feat = f"CASE WHEN {' OR '.join(bad)} THEN error('{_OFF_GRID}') ELSE {feat} END"
    # floor((T - base) / step) + 1 is the field of the latest event time <= T.
    t_us = f"epoch_us({_TS})"
    probe = f"CASE WHEN {t_us} < {base} THEN 0 ELSE ({t_us} - ({base})) // {step} + 1 END"
    return _AsofKey(
        feat=feat,
        entity=f"({probe} << {low}) + {(1 << low) - 1}",
        decode=lambda key: ((key >> low) - 1) * step + base,
        rn_bits=rn_bits,
    )
