"""The layout of a feature table sorted for the join, as the platform writes it and the
join checks it (LAYOUT_KEY in the parquet metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Key-value metadata key of a feature table laid out for the join: JSON {"sorted_by": [...]}.
LAYOUT_KEY = b"mlplat.layout"
# Rows per row group of a feature table the platform writes: small enough that a retrieval
# of a few keys reads a few groups (the groups hold key ranges), large enough to scan fast.
LAYOUT_ROW_GROUP_ROWS = 256 * 1024


def _sorted_by(schema: pa.Schema) -> tuple[str, ...]:
    raw = (schema.metadata or {}).get(LAYOUT_KEY)
    if raw is None:
        return ()
    try:
        columns = json.loads(raw)["sorted_by"]
    except (ValueError, KeyError, TypeError):
        return ()
    return tuple(c for c in columns if isinstance(c, str))


def layout_for_join(
    table: pa.Table, join_keys: list[str], timestamp: str, created: str | None = None
) -> pa.Table:
    """`table` sorted for the point-in-time join and marked so in its schema metadata.

    Rows are ordered by join keys, event time, created time (nulls first, as a null created
    time loses every tie) and, within equal values, kept in their original order (Arrow's
    sort is stable), so the last row of a tie is still the one the tie-break picks.
    """
    by = [*join_keys, timestamp, *([created] if created else [])]
    order = pc.sort_indices(table, sort_keys=[(c, "ascending", "at_start") for c in by])
    ordered = table.take(order)
    metadata = {**(table.schema.metadata or {}), LAYOUT_KEY: json.dumps({"sorted_by": by}).encode()}
    return ordered.replace_schema_metadata(metadata)


def write_feature_table(
    table: pa.Table,
    where: str | Path,
    join_keys: list[str],
    timestamp: str,
    created: str | None = None,
    row_group_rows: int = LAYOUT_ROW_GROUP_ROWS,
) -> None:
    """Write a feature table laid out for the join (see `layout_for_join`) to parquet."""
    ordered = layout_for_join(table, join_keys, timestamp, created)
    by = _sorted_by(ordered.schema)
    sorting = [pq.SortingColumn(ordered.schema.get_field_index(c), nulls_first=True) for c in by]
    pq.write_table(ordered, where, row_group_size=row_group_rows, sorting_columns=sorting)
