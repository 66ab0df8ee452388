"""The point-in-time join of each feature view onto the entity frame: DuckDB's ASOF JOIN on a
packed key over the rows the entity keys and times can reach, or the sort-free match."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast.repo_config import RepoConfig

from platform_assets.features.offline_store.config import (
    _KEY,
    _ROW,
    _SRC_ROW,
    _TS,
    _VIS,
    OfflineStoreInputError,
)
from platform_assets.features.offline_store.connection import _connect
from platform_assets.features.offline_store.keys import (
    _NULL_CREATED,
    _OFF_GRID,
    _AsofKey,
    _bit_length,
    _guess_scaled,
    _offset_key,
    _scaled_fields,
    _scaled_key,
)
from platform_assets.features.offline_store.plan import (
    _Entity,
    _entity_timestamps,
    _Match,
    _ViewPlan,
)
from platform_assets.features.offline_store.sorted_match import _sorted_match
from platform_assets.features.offline_store.sources import _epoch_us, _q, _timestamp_literal

# Widths of the packed BIGINT ASOF key (one bit spare for the sign, one for the probe's
# all-ones tail); tests lower them to force the scaled, rank and struct encodings.
_MAX_OFFSET_BITS = 62
_MAX_SCALED_BITS = 62
_MAX_RANK_BITS = 62
# Rows sampled to guess the time grid; a wrong guess only costs a redo with exact steps.
_SAMPLE_ROWS = 4096


def _source_bounds(
    con: duckdb.DuckDBPyConnection, plan: _ViewPlan, src: str
) -> tuple[int | None, int | None, int | None, int]:
    """(min event time, min created, max created, max source row), in microseconds.

    Read from the parquet footer when every row group has statistics (free), otherwise by a
    scan. They only size the packed ASOF key; the join query checks every row against them.
    """
    if plan.source.local_file is not None:
        meta = pq.ParquetFile(plan.source.local_file).metadata
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        wanted = [plan.ts_column] + ([plan.created_column] if plan.created_column else [])
        found: dict[str, list[int]] = {c: [] for c in wanted}
        complete = all(c in names for c in wanted)
        for g in range(meta.num_row_groups) if complete else []:
            group = meta.row_group(g)
            for column in wanted:
                stats = group.column(names.index(column)).statistics
                if group.num_rows and (stats is None or not stats.has_min_max):
                    complete = False
                elif group.num_rows:
                    found[column] += [_epoch_us(stats.min), _epoch_us(stats.max) + 1]
        if complete:
            ts = found[plan.ts_column]
            created = found[plan.created_column] if plan.created_column else []
            return (
                min(ts) if ts else None,
                min(created) if created else None,
                max(created) if created else None,
                meta.num_rows,
            )
    created_sql = plan.created_sql or "NULL::TIMESTAMP"
    row = con.execute(
        f"SELECT min(epoch_us({plan.ts_sql})), min(epoch_us({created_sql})), "
        f"max(epoch_us({created_sql})), coalesce(max({_SRC_ROW}), 0) FROM {src}"
    ).fetchall()[0]
    return row[0], row[1], row[2], row[3]


def _join_view(
    con: duckdb.DuckDBPyConnection, plan: _ViewPlan, entity: _Entity, t_min: int, t_max: int
) -> pa.Table:
    """ASOF-join one view onto the registered `entity` relation; rows come back in entity order.

    The feature rows are first cut to the entity key set and the time window the entity rows can
    reach. Ties on (keys, event time) are broken inside the ASOF key itself: event time, created
    time and source row are packed into one integer (or a struct when they do not fit), and the
    entity side probes with the largest tie-breakers, so the ASOF match is the latest event time
    <= T and, among equal times, the latest created time, then the last source row.
    """
    sorted_match = _sorted_match(plan, entity)
    if sorted_match is not None:
        return _features(plan, None, sorted_match)
    columns = [*plan.source_keys, *plan.source_features, plan.ts_column]
    if plan.created_column:
        columns.append(plan.created_column)
    src, table = plan.source.relation_sql(con, "source_table", columns)
    keys = list(zip(plan.entity_keys, plan.source_keys, strict=True))
    ts_us = f"epoch_us({plan.ts_sql})"
    # Literal bounds on the plain column let DuckDB skip row groups by their statistics.
    where = [f"{plan.ts_sql} <= {_timestamp_literal(t_max)}"]
    if plan.ttl_us:
        where.append(f"{plan.ts_sql} >= {_timestamp_literal(t_min - plan.ttl_us)}")
    if plan.since_us is not None:
        where.append(f"{plan.ts_sql} >= {_timestamp_literal(plan.since_us)}")
    if plan.created_cutoff:
        # A row created after every entity time is visible to none; a null created time is
        # never known to be at or before T (as in Feast's SQL stores: NULL <= T is not true).
        where.append(f"{plan.created_sql} <= {_timestamp_literal(t_max)}")
    ts_lo, c_lo, c_hi, rn_max = _source_bounds(con, plan, src)
    semi, params = _key_filter(con, keys, where, rn_max)
    if plan.ttl_us:
        ts_lo = t_min - plan.ttl_us  # the filter guarantees it
    ts_lo = t_max if ts_lo is None else min(ts_lo, t_max)
    c_lo, c_hi = (c_lo or 0), (c_hi or 0)
    ts_span, c_span = t_max - ts_lo + 1, max(0, c_hi - c_lo) + 1
    ts_bits, c_bits, rn_bits = _bit_length(ts_span), _bit_length(c_span), _bit_length(rn_max)
    created = plan.created_sql or "NULL::TIMESTAMP"
    created_us = f"coalesce(epoch_us({created}), {_NULL_CREATED})"
    filtered = f"FROM {src} p {semi} WHERE {' AND '.join(where)}"
    # A BIGINT key sorts about twice as fast as a HUGEINT or struct one, so the key is packed
    # into 62 bits: offsets from the window start when they fit (free, from the footer);
    # else offsets in units of the times' common step, first guessed from a sample and
    # checked row by row in the join itself, then (if the guess fails) from the exact steps;
    # else dense ranks of the (event time, created time) pairs that occur; else a struct.
    if ts_bits + c_bits + rn_bits <= _MAX_OFFSET_BITS:
        ts_off = f"({ts_us} - {ts_lo} + 1)"
        c_off = f"coalesce(epoch_us({created}) - {c_lo} + 1, 0)"
        # Footer statistics are exact (writers compute them from the data), so no row can
        # fall outside [ts_lo, t_max] x [c_lo, c_hi] and the fields cannot overflow each other.
        key = _offset_key(ts_off, c_off, c_bits + rn_bits, rn_bits, ts_lo)
        return _features(plan, table, _asof(con, plan, entity, src, semi, where, params, keys, key))
    sample = con.sql(
        f"SELECT {ts_us} AS t, {created_us} AS c {filtered} LIMIT {_SAMPLE_ROWS}", params=params
    ).fetchnumpy()
    guess = _guess_scaled(
        np.asarray(sample["t"], dtype=np.int64),
        np.asarray(sample["c"], dtype=np.int64),
        plan.created_sql is not None,
        ts_lo,
        t_max,
        c_lo,
        c_hi,
    )
    if guess is not None and guess.bits + rn_bits <= _MAX_SCALED_BITS:
        key = _scaled_key(guess, rn_bits, ts_us, created, checked=True)
        try:
            match = _asof(con, plan, entity, src, semi, where, params, keys, key)
        except duckdb.Error as e:
            if _OFF_GRID not in str(e):
                raise
        else:
            return _features(plan, table, match)
    key = _exact_key(con, entity, filtered, params, ts_us, created, t_max, rn_bits, plan.ts_sql)
    return _features(plan, table, _asof(con, plan, entity, src, semi, where, params, keys, key))


def _features(plan: _ViewPlan, table: pa.Table | None, match: _Match) -> pa.Table:
    """The view's feature values of the matched source rows, in entity order; null where no
    row matched."""
    rows, found = match
    features = plan.source_features
    if not found.any():
        types = [plan.source.schema.field(f).type for f in features]
        return pa.table([pa.nulls(len(rows), t) for t in types], names=features)
    # Rows without a match read some matched row, then are nulled: a take without null
    # indices is several times faster than one with them.
    rows[~found] = rows[found][0]
    values = plan.source.take_rows(table, features, rows)
    if found.all():
        return values
    keep = pa.array(found)
    return pa.table(
        [pc.if_else(keep, c, pa.scalar(None, c.type)) for c in values.columns], names=features
    )


def _exact_key(
    con: duckdb.DuckDBPyConnection,
    entity: _Entity,
    filtered: str,
    params: list[Any],
    ts_us: str,
    created: str,
    t_max: int,
    rn_bits: int,
    ts_sql: str,
) -> _AsofKey:
    """Scaled offsets with the exact steps, else ranks, else a struct: from the distinct
    (event time, created time) pairs of the filtered rows."""
    created_us = f"coalesce(epoch_us({created}), {_NULL_CREATED})"
    pairs = con.sql(
        f"SELECT DISTINCT {ts_us} AS t, {created_us} AS c {filtered}", params=params
    ).fetchnumpy()
    pair_t = np.asarray(pairs["t"], dtype=np.int64)
    pair_c = np.asarray(pairs["c"], dtype=np.int64)
    scaled = _scaled_fields(pair_t, pair_c, t_max)
    if scaled is not None and scaled.bits + rn_bits <= _MAX_SCALED_BITS:
        return _scaled_key(scaled, rn_bits, ts_us, created, checked=False)
    if _bit_length(len(pair_t) + 1) + rn_bits <= _MAX_RANK_BITS:
        order = np.lexsort((pair_c, pair_t))
        pair_ts = pair_t[order]
        con.register(
            "pair_ranks",
            pa.table(
                {
                    "__pr_t": pair_ts,
                    "__pr_c": pair_c[order],
                    "__pr_rank": np.arange(1, len(pair_ts) + 1, dtype=np.int64),
                }
            ),
        )
        # Rank of the last pair at or before T: every pair with event time <= T ranks at or
        # below it, every later pair above it.
        ranks = np.searchsorted(pair_ts, entity.ts_us, side="right")
        probe = (ranks.astype(np.int64) << rn_bits) + ((1 << rn_bits) - 1)
        con.register(
            "entity_probe",
            entity.table.append_column(_KEY, pa.array(probe, mask=~entity.ts_valid)),
        )
        # Ranks start at 1; index 0 stands for "no row", whose time the caller ignores.
        rank_ts = np.concatenate(([0], pair_ts))
        return _AsofKey(
            feat=f"(__pr_rank << {rn_bits}) + {_SRC_ROW}",
            entity=_KEY,
            decode=lambda key: rank_ts[key >> rn_bits],
            rn_bits=rn_bits,
            join=f"JOIN pair_ranks ON __pr_t = {ts_us} AND __pr_c = {created_us}",
            entity_rel="entity_probe",
        )
    return _AsofKey(
        feat=(
            f"{{'t': {ts_sql}, 'c': coalesce({created}, '-infinity'::TIMESTAMP), 'r': {_SRC_ROW}}}"
        ),
        entity=f"{{'t': {_TS}, 'c': 'infinity'::TIMESTAMP, 'r': {2**63 - 1}}}",
        decode=None,
    )


def _asof(
    con: duckdb.DuckDBPyConnection,
    plan: _ViewPlan,
    entity: _Entity,
    src: str,
    semi: str,
    where: list[str],
    params: list[Any],
    keys: list[tuple[str, str]],
    key: _AsofKey,
) -> _Match:
    """Run the ASOF join with `key`: which source row each entity row gets, TTL applied."""
    # Only the join keys and the ASOF key go through the join's sort: the source row number and
    # the event time (for the TTL test) are decoded from the matched key, and the feature values
    # are read afterwards for the matched rows alone.
    feat_cols = [f"p.{_q(s)} AS __k{i}" for i, (_, s) in enumerate(keys)]
    on = [f"e.{_q(e)} = f.__k{i}" for i, (e, _) in enumerate(keys)]
    entity_cols = [_ROW, *(_q(e) for e, _ in keys)]
    if plan.created_cutoff:
        # A row is a candidate for T once both its event time and its created time are <= T,
        # that is from its visible time max(event, created) on. Per key and in visible-time
        # order, the running maximum of the ASOF key is the best row visible so far; the ASOF
        # join on visible time then finds it for each T (peers share the maximum, as the
        # window's default RANGE frame includes them).
        visible = f"greatest(epoch_us({plan.ts_sql}), epoch_us({plan.created_sql}))"
        partition = ", ".join(f"p.{_q(s)}" for _, s in keys)
        over = f"PARTITION BY {partition} ORDER BY {visible}" if keys else f"ORDER BY {visible}"
        feat_cols += [f"{visible} AS {_VIS}", f"max({key.feat}) OVER ({over}) AS {_KEY}"]
        entity_cols.append(f"epoch_us({_TS}) AS {_VIS}")
        on.append(f"e.{_VIS} >= f.{_VIS}")
    else:
        feat_cols.append(f"{key.feat} AS {_KEY}")
        entity_cols.append(_KEY if key.entity == _KEY else f"{key.entity} AS {_KEY}")
        on.append(f"e.{_KEY} >= f.{_KEY}")
    if key.decode is not None:
        out = [f"e.{_ROW}", f"f.{_KEY}"]
    else:
        out = [f"e.{_ROW}", f"f.{_KEY}.r", f"epoch_us(f.{_KEY}.t)"]
    sql = (
        f"WITH f AS (SELECT {', '.join(feat_cols)} FROM {src} p {semi} {key.join} "
        f"WHERE {' AND '.join(where)}), "
        f"e AS (SELECT {', '.join(entity_cols)} FROM {key.entity_rel}) "
        f"SELECT {', '.join(out)} FROM e ASOF LEFT JOIN f ON {' AND '.join(on)}"
    )
    joined = con.sql(sql, params=params).to_arrow_table().combine_chunks()
    # The ASOF join emits rows in its own order; scattering by entity row id restores the
    # entity frame's order in O(n), cheaper than an ORDER BY.
    entity_rows = joined.column(0).to_numpy()
    matched = joined.column(1)
    found = matched.is_valid().to_numpy(zero_copy_only=False)
    values = matched.fill_null(0).to_numpy()
    if key.decode is not None:
        source_rows = values & ((1 << key.rn_bits) - 1)
        event_us = key.decode(values) if plan.ttl_us else None
    else:
        source_rows = values
        event_us = joined.column(2).fill_null(0).to_numpy()
    if plan.ttl_us:
        # The ASOF match is the latest row <= T; it is a candidate only if not older than TTL.
        found &= event_us >= entity.ts_us[entity_rows] - plan.ttl_us
    rows = np.empty(len(entity_rows), dtype=np.int64)
    rows[entity_rows] = source_rows
    in_order = np.empty(len(entity_rows), dtype=bool)
    in_order[entity_rows] = found
    return _Match(rows, in_order)


# An exact semi-join with the entity keys pays off only when it can drop most feature rows;
# with many distinct entity keys per source row the ASOF join's own key match is cheaper.
_SEMI_JOIN_MAX_KEY_FRACTION = 1 / 1024


def _key_filter(
    con: duckdb.DuckDBPyConnection,
    keys: list[tuple[str, str]],
    where: list[str],
    source_rows: int,
) -> tuple[str, list[Any]]:
    """Cut feature rows to the entity key set: always by each key's range, which the parquet
    scan applies with row-group statistics, and exactly by a semi-join when the entity frame
    has few distinct keys relative to the source. Appends to `where`; returns the join clause.
    """
    if not keys:
        return "", []
    entity_keys = ", ".join(_q(e) for e, _ in keys)
    params: list[Any] = []
    # One pass for the ranges and the key count; an estimate of the count is enough to pick
    # the plan (HyperLogLog, a third of the cost of an exact DISTINCT).
    ranges = con.sql(
        "SELECT "
        + ", ".join(f"min({_q(e)}), max({_q(e)})" for e, _ in keys)
        + f", approx_count_distinct(hash({entity_keys})) FROM entity"
    ).fetchall()[0]
    for i, (_, source_key) in enumerate(keys):
        low, high = ranges[2 * i], ranges[2 * i + 1]
        if low is None:
            where.append("FALSE")  # every entity key is null: nothing can match
            continue
        where.append(f"p.{_q(source_key)} BETWEEN ? AND ?")
        params += [low, high]
    if ranges[-1] > source_rows * _SEMI_JOIN_MAX_KEY_FRACTION:
        return "", params
    on = " AND ".join(f"p.{_q(s)} = s.{_q(e)}" for e, s in keys)
    return f"SEMI JOIN (SELECT DISTINCT {entity_keys} FROM entity) s ON {on}", params


def _historical_features(
    config: RepoConfig,
    entity: pa.Table,
    plans: list[_ViewPlan],
    ts_column: str,
    view_names: list[str],
) -> pa.Table:
    """Join every view onto the entity frame, one view at a time, keeping the frame's rows."""
    entity_ts = _entity_timestamps(entity, ts_column, view_names)
    valid = pc.drop_null(entity_ts)
    result = entity
    if len(valid) == 0:
        for plan in plans:
            for output, feature in zip(plan.output_names, plan.source_features, strict=True):
                typ = plan.source.schema.field(feature).type
                result = result.append_column(output, pa.nulls(entity.num_rows, typ))
        return result
    bounds = pc.min_max(valid.cast(pa.int64()))
    t_min, t_max = bounds["min"].as_py(), bounds["max"].as_py()
    key_columns = sorted({k for plan in plans for k in plan.entity_keys})
    internal = _Entity(
        table=pa.table(
            {
                _ROW: pa.array(np.arange(entity.num_rows, dtype=np.int64)),
                _TS: entity_ts,
                **{k: entity.column(k) for k in key_columns},
            }
        ),
        ts_us=entity_ts.cast(pa.int64()).fill_null(0).to_numpy(),
        ts_valid=entity_ts.is_valid().to_numpy(zero_copy_only=False),
    )
    with _connect(config) as con:
        con.register("entity", internal.table)
        for plan in plans:
            try:
                joined = _join_view(con, plan, internal, t_min, t_max)
            except duckdb.Error as e:
                raise OfflineStoreInputError(
                    f"{plan.source.label}: point-in-time join failed: {e}"
                ) from e
            for output, column in zip(plan.output_names, joined.columns, strict=False):
                result = result.append_column(output, column)
    return result
