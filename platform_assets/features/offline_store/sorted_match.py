"""The sort-free join for a local file laid out for it (`layout_for_join`): a binary search per
entity row over (key group, event time), after checking the layout really holds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from platform_assets.features.offline_store.keys import _bit_length
from platform_assets.features.offline_store.plan import _Entity, _Match, _ViewPlan


def _sorted_match(plan: _ViewPlan, entity: _Entity) -> _Match | None:
    """The join without a sort, for a local file laid out for it (`layout_for_join`): rows
    of one key contiguous and ordered by event time, created time, then file order.

    The layout is a claim in the file's metadata, so it is checked (O(n), on the columns the
    join reads anyway) and None returned, for the general join to answer, when it does not
    hold or the view needs what this path lacks (several join keys, the created-time cutoff).
    The match is then a binary search per entity row over (key group, event time).
    """
    source = plan.source
    need = (
        *plan.source_keys,
        plan.ts_column,
        *([plan.created_column] if plan.created_column else []),
    )
    if (
        source.local_file is None
        or len(plan.source_keys) != 1
        or plan.created_cutoff
        or source.sorted_by[: len(need)] != need
    ):
        return None
    key_column = plan.source_keys[0]
    entity_keys = entity.table.column(plan.entity_keys[0])
    if entity_keys.type != source.schema.field(key_column).type:
        return None  # the general join applies DuckDB's casts (and its errors)
    parquet = pq.ParquetFile(source.local_file)
    meta = parquet.metadata
    sizes = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], np.int64)
    starts = np.cumsum(sizes) - sizes
    groups = _groups_in_key_range(meta, key_column, entity_keys)
    if not groups:
        return _Match(
            np.zeros(entity.table.num_rows, np.int64), np.zeros(entity.table.num_rows, bool)
        )
    created_column = [plan.created_column] if plan.created_column else []
    read = parquet.read_row_groups(groups, columns=[key_column, plan.ts_column, *created_column])
    keys = read.column(0).combine_chunks()
    ts = read.column(1).combine_chunks()
    if ts.null_count:
        return None
    ts_us = ts.cast(pa.timestamp(ts.type.unit)).cast(pa.timestamp("us"), safe=False)
    ts_us = ts_us.cast(pa.int64()).to_numpy()
    # Null keys sort first; they never match, so the search runs over the rest.
    nulls = keys.null_count
    if nulls and keys.slice(0, nulls).null_count != nulls:
        return None
    keys, ts_us, skip = keys.slice(nulls), ts_us[nulls:], nulls
    n = len(keys)
    if n == 0:
        return _Match(
            np.zeros(entity.table.num_rows, np.int64), np.zeros(entity.table.num_rows, bool)
        )
    if pa.types.is_integer(keys.type):
        k = keys.to_numpy()
        new_key = k[1:] != k[:-1]
    else:
        new_key = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    group_start = np.flatnonzero(np.concatenate(([True], new_key)))
    distinct = keys.take(pa.array(group_start))
    if len(pc.unique(distinct)) != len(distinct):
        return None  # a key's rows are not contiguous
    # Packed (group, event time) key: time offsets in microseconds, or in units of their
    # common step when that is needed to fit; slot 0 stands for "before every row". The
    # group grows by one at each new key, so the file is in (key, event time) order exactly
    # when the packed keys never decrease.
    base, top = int(ts_us.min()), int(ts_us.max())
    step, span = 1, top - base + 2
    if _bit_length(len(group_start)) + _bit_length(span) > 62:
        step = int(np.gcd.reduce(ts_us - base)) or 1
        span = (top - base) // step + 2
        if _bit_length(len(group_start)) + _bit_length(span) > 62:
            return None
    packed = np.cumsum(np.concatenate(([0], new_key)), dtype=np.int64)
    packed *= span
    packed += (ts_us - base) // step + 1 if step > 1 else ts_us - (base - 1)
    rise = np.diff(packed)
    if (rise < 0).any():
        return None  # event times not ordered within a key
    if plan.created_column is not None:
        tie = np.flatnonzero(rise == 0)
        created = read.column(2).combine_chunks().slice(skip)
        if len(tie) and not _created_ordered(created, tie):
            return None
    del rise, new_key
    # Entity side: the key's group, and the slot of the latest event time <= T.
    found_group = pc.index_in(entity_keys, value_set=distinct, skip_nulls=True)
    valid = found_group.is_valid().to_numpy(zero_copy_only=False) & entity.ts_valid
    g = found_group.fill_null(0).to_numpy().astype(np.int64)
    slot = np.clip(np.floor_divide(entity.ts_us - base, step) + 1, 0, span - 1)
    probe = g * span + slot
    # Probes in ascending order make the search walk the array forward (several times faster
    # than random probes into a large array); the argsort costs much less than it saves.
    order = np.argsort(probe)
    at = np.empty_like(probe)
    at[order] = np.searchsorted(packed, probe[order], side="right") - 1
    valid &= at >= group_start[g]
    at = np.where(valid, at, 0)
    event_us = ts_us[at]
    if plan.ttl_us:
        valid &= event_us >= entity.ts_us - plan.ttl_us
    if plan.since_us is not None:
        valid &= event_us >= plan.since_us
    # Positions in the rows read -> row numbers in the file.
    position = at + skip
    if len(groups) == len(sizes):
        return _Match(position, valid)
    read_starts = np.cumsum(sizes[groups]) - sizes[groups]
    in_group = np.searchsorted(read_starts, position, side="right") - 1
    rows = starts[np.asarray(groups)[in_group]] + position - read_starts[in_group]
    return _Match(rows, valid)


def _groups_in_key_range(
    meta: pq.FileMetaData, key_column: str, entity_keys: pa.Array
) -> list[int]:
    """Row groups whose key statistics overlap the entity keys' range (all without stats)."""
    every = list(range(meta.num_row_groups))
    bounds = pc.min_max(entity_keys)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None:
        return []
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    if key_column not in names:
        return every
    index = names.index(key_column)
    kept = []
    for g in every:
        stats = meta.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            kept.append(g)
        elif not (stats.max < low or stats.min > high):
            kept.append(g)
    return kept


def _created_ordered(created: pa.Array, tie: np.ndarray) -> bool:
    """Whether created times rise (nulls first) across each tie on (key, event time): from
    row `tie[i]` to the next."""
    as_us = created.cast(pa.timestamp(created.type.unit)).cast(pa.timestamp("us"), safe=False)
    if as_us.null_count == 0:
        c = as_us.cast(pa.int64()).to_numpy()
        return not (c[tie + 1] < c[tie]).any()
    valid = as_us.is_valid().to_numpy(zero_copy_only=False)
    c = as_us.cast(pa.int64()).fill_null(0).to_numpy()
    before, after = tie, tie + 1
    # A non-null before a null, or a later created time before an earlier one, breaks it.
    broken = (valid[before] & ~valid[after]) | (
        valid[before] & valid[after] & (c[after] < c[before])
    )
    return not broken.any()
