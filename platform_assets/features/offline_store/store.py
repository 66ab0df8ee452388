"""A Feast offline store that does point-in-time joins with DuckDB's ASOF JOIN over parquet.

Select it in `feature_store.yaml` with
`offline_store: {type: platform_assets.features.offline_store.AsofOfflineStore}`; the exact
semantics are in docs/point_in_time.md. This module must not import dagster: Feast imports it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlencode, urlparse

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from feast.data_source import DataSource
from feast.errors import (
    FeastError,
    FeatureNameCollisionError,
    SavedDatasetLocationAlreadyExists,
)
from feast.feature_view import FeatureView
from feast.infra.offline_stores.file_source import FileSource, SavedDatasetFileStorage
from feast.infra.offline_stores.offline_store import (
    OfflineStore,
    RetrievalJob,
    RetrievalMetadata,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.saved_dataset import SavedDatasetStorage

STORE_TYPE = "platform_assets.features.offline_store.AsofOfflineStore"
DEFAULT_ENTITY_TIMESTAMP = "event_timestamp"

# Feature values of matched rows are read from a local file in batches of row groups of at
# most this many bytes uncompressed (a larger row group is a batch by itself).
_VALUES_BATCH_BYTES = 512 * 2**20

# Internal column names; the double underscore prefix keeps them clear of user columns.
_ROW = "__asof_row"
_TS = "__asof_ts"
_SRC_ROW = "__asof_src_row"
_KEY = "__asof_key"
_VIS = "__asof_visible"
# Widths of the packed BIGINT ASOF key (one bit spare for the sign, one for the probe's
# all-ones tail); tests lower them to force the scaled, rank and struct encodings.
_MAX_OFFSET_BITS = 62
_MAX_SCALED_BITS = 62
_MAX_RANK_BITS = 62
# Rows sampled to guess the time grid; a wrong guess only costs a redo with exact steps.
_SAMPLE_ROWS = 4096
# Raised by the join when a row is off the guessed grid.
_OFF_GRID = "__asof_off_grid"
# Stands for a null created time in rank pairs: before any real time (about 144,000 BC).
_NULL_CREATED = -(2**62)


class AsofOfflineStoreConfig(FeastConfigBaseModel):
    """Offline store config; Feast finds it by appending `Config` to the store class path."""

    type: Literal["platform_assets.features.offline_store.AsofOfflineStore"] = STORE_TYPE
    threads: int | None = None
    """DuckDB worker threads; None uses every core. The result does not depend on it."""
    memory_limit: str | None = None
    """DuckDB memory limit such as '3GB'; None keeps DuckDB's default (80% of RAM). Feature
    values are read outside it, in row-group batches of at most _VALUES_BATCH_BYTES."""


class OfflineStoreInputError(ValueError):
    """Bad input to the offline store: a missing column, file or wrongly typed timestamp."""


def feature_store_yaml(project: str, repo_dir: Path, registry: Path, online_db: Path) -> str:
    """Return feature_store.yaml text for a local repo that uses this offline store.

    Relative registry and online-store paths are taken relative to `repo_dir`, as Feast reads
    them, and written as absolute paths so the file means the same wherever it is read from.
    """

    def absolute(path: Path) -> str:
        return (Path(repo_dir) / path).resolve().as_posix()

    return (
        f"project: {project}\n"
        "provider: local\n"
        f"registry: {absolute(registry)}\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {absolute(online_db)}\n"
        "offline_store:\n"
        f"  type: {STORE_TYPE}\n"
        # Materialize through pull_latest_from_table_or_query: Feast's own de-duplication of
        # pull_all's rows uses an unstable sort, so ties would not go to the last source row.
        "materialization:\n"
        "  pull_latest_features: true\n"
        "entity_key_serialization_version: 3\n"
        # The store reads any entity time zone itself; Feast's own coercion would copy the
        # entity frame and turn its timestamp columns into UTC, changing entity columns.
        "coerce_tz_aware: false\n"
    )


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A parquet FileSource resolved to something DuckDB can scan, with its schema checked."""

    label: str  # what error messages call the source: the view and the file
    uri: str
    local_file: str | None  # scanned natively by DuckDB when set
    schema: pa.Schema
    # The columns the file says it is sorted by (LAYOUT_KEY in its key-value metadata);
    # a claim the join checks before relying on it.
    sorted_by: tuple[str, ...] = ()

    def relation_sql(
        self, con: duckdb.DuckDBPyConnection, name: str, columns: list[str]
    ) -> tuple[str, pa.Table | None]:
        """Make the source scannable as `name` in `con`, with a source-order row number.

        Returns the SQL relation and, for a source read through pyarrow, the table it read
        (`columns` plus the row number), from which `take_rows` then serves.
        """
        if self.local_file is not None:
            path = self.local_file.replace("'", "''")
            relation = (
                f"(SELECT * RENAME (file_row_number AS {_SRC_ROW}) "
                f"FROM read_parquet('{path}', file_row_number = true))"
            )
            return relation, None
        # Remote or multi-file sources go through pyarrow (any pyarrow or fsspec filesystem);
        # the row number is the position in the dataset's file order.
        table = _open_dataset(self.uri).to_table(columns=list(dict.fromkeys(columns)))
        table = table.append_column(_SRC_ROW, pa.array(np.arange(table.num_rows)))
        con.register(name, table)
        return name, table

    def take_rows(self, table: pa.Table | None, columns: list[str], rows: np.ndarray) -> pa.Table:
        """`columns` of the source rows numbered `rows` (as `relation_sql` numbers them).

        From a local file only the row groups holding one of `rows` are read, in batches of
        at most _VALUES_BATCH_BYTES uncompressed, so a wide view over a large file is never
        decoded into memory whole.
        """
        if table is not None:
            return table.select(columns).take(rows)
        unique = list(dict.fromkeys(columns))
        try:
            parquet = pq.ParquetFile(self.local_file)
            meta = parquet.metadata
            wanted = [
                i
                for i in range(meta.num_columns)
                if meta.schema.column(i).path.split(".")[0] in unique
            ]
            groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
            sizes = np.array([g.num_rows for g in groups], dtype=np.int64)
            nbytes = [sum(g.column(i).total_uncompressed_size for i in wanted) for g in groups]
            starts = np.cumsum(sizes) - sizes
            group = np.searchsorted(starts, rows, side="right") - 1
            needed = np.flatnonzero(np.bincount(group, minlength=len(sizes)))
            batches: list[list[int]] = [[]]
            used = 0
            for g in needed.tolist():
                if batches[-1] and used + nbytes[g] > _VALUES_BATCH_BYTES:
                    batches.append([])
                    used = 0
                batches[-1].append(g)
                used += nbytes[g]

            def take(batch: list[int], batch_rows: np.ndarray, batch_group: np.ndarray) -> pa.Table:
                # Row numbers move to their place in the concatenation of the groups read.
                kept = sizes[batch]
                shift = np.zeros(len(sizes), dtype=np.int64)
                shift[batch] = starts[batch] - (np.cumsum(kept) - kept)
                read = parquet.read_row_groups(batch, columns=unique)
                return read.select(columns).take(batch_rows - shift[batch_group])

            if len(batches) == 1:
                return take(batches[0], rows, group)
            batch_of_group = np.zeros(len(sizes), dtype=np.int64)
            for b, batch in enumerate(batches):
                batch_of_group[batch] = b
            batch_of_row = batch_of_group[group]
            pieces, positions = [], []
            for b, batch in enumerate(batches):
                at = np.flatnonzero(batch_of_row == b)
                pieces.append(take(batch, rows[at], group[at]))
                positions.append(at)
        except (OSError, pa.ArrowException) as e:
            raise OfflineStoreInputError(f"{self.label}: reading feature values failed: {e}") from e
        order = np.empty(len(rows), dtype=np.int64)
        order[np.concatenate(positions)] = np.arange(len(rows), dtype=np.int64)
        return pa.concat_tables(pieces).take(order)


def _filesystem_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        # Schemes pyarrow does not know (memory://, http://, ...) are served by fsspec.
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _open_dataset(uri: str) -> pads.Dataset:
    fs, path = _filesystem_and_path(uri)
    return pads.dataset(path, filesystem=fs, format="parquet")


def _resolve_uri(config: RepoConfig, data_source: DataSource) -> str:
    if not isinstance(data_source, FileSource):
        raise OfflineStoreInputError(
            f"AsofOfflineStore reads parquet FileSources only; source {data_source.name!r} "
            f"is a {type(data_source).__name__}"
        )
    uri = FileSource.get_uri_for_file_path(config.repo_path, data_source.path)
    endpoint = data_source.s3_endpoint_override
    if endpoint and uri.startswith("s3://"):
        # The source names its S3 endpoint (a server other than AWS); pyarrow takes it from
        # the URI's query, so every filesystem opened from this URI speaks to that server.
        uri += ("&" if "?" in uri else "?") + urlencode({"endpoint_override": endpoint})
    return uri


def _open_source(config: RepoConfig, data_source: DataSource, what: str) -> _Source:
    """Check that the source exists and is readable parquet; raise naming `what` and the file."""
    uri = _resolve_uri(config, data_source)
    label = f"{what}, file {uri!r}"
    parsed = urlparse(uri)
    is_local = not parsed.scheme or parsed.scheme == "file" or len(parsed.scheme) == 1
    if is_local:
        local = parsed.path if parsed.scheme == "file" else uri
        if not os.path.exists(local):
            raise OfflineStoreInputError(f"{label}: the source file does not exist")
        if os.path.isfile(local):
            try:
                schema = pq.read_schema(local)
            except (OSError, pa.ArrowException) as e:
                raise OfflineStoreInputError(
                    f"{label}: the source file is not readable parquet ({e})"
                ) from e
            return _Source(label, uri, local, schema, _sorted_by(schema))
    try:
        fs, path = _filesystem_and_path(uri)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise OfflineStoreInputError(f"{label}: the source file does not exist")
        schema = pads.dataset(path, filesystem=fs, format="parquet").schema
    except (OSError, pa.ArrowException) as e:
        raise OfflineStoreInputError(
            f"{label}: the source file is not readable parquet ({e})"
        ) from e
    return _Source(label, uri, None, schema)


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


def _require_columns(source: _Source, columns: list[str]) -> None:
    missing = [c for c in columns if c not in source.schema.names]
    if missing:
        raise OfflineStoreInputError(
            f"{source.label}: declared column(s) {missing} are missing from the source; "
            f"it has {source.schema.names}"
        )


def _timestamp_sql(source: _Source, column: str) -> str:
    """SQL turning a source timestamp column into naive UTC microseconds (DuckDB TIMESTAMP)."""
    typ = source.schema.field(column).type
    if not pa.types.is_timestamp(typ):
        raise OfflineStoreInputError(
            f"{source.label}: column {column!r} has type {typ}; a timestamp is required"
        )
    quoted = _q(column)
    if typ.unit == "ns":
        # Sub-microsecond digits are dropped (toward zero, like pyarrow's cast of the entity
        # side); DuckDB's own cast would round instead.
        return f"make_timestamp(epoch_ns({quoted}) // 1000)"
    if typ.tz is not None:
        # Aware values are instants: take their UTC wall clock.
        return f"make_timestamp(epoch_us({quoted}))"
    if typ.unit == "us":
        return quoted
    return f"CAST({quoted} AS TIMESTAMP)"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _utc_naive(value: datetime) -> datetime:
    """Naive datetimes are UTC already; aware ones are converted."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


@contextmanager
def _connect(config: RepoConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh DuckDB connection (own registrations and temp tables) to a per-process database.

    Reusing the in-memory database saves starting and tearing one down per retrieval; it is
    keyed by process id because a DuckDB handle must not cross a fork.
    """
    store_config = config.offline_store
    threads = getattr(store_config, "threads", None)
    memory_limit = getattr(store_config, "memory_limit", None)
    key = (os.getpid(), threads, memory_limit)
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            settings: dict[str, Any] = {}
            if threads:
                settings["threads"] = int(threads)
            if memory_limit:
                settings["memory_limit"] = memory_limit
            database = _DATABASES[key] = duckdb.connect(config=settings)
        con = database.cursor()
    try:
        yield con
    finally:
        con.close()


_DATABASES: dict[tuple[int, int | None, str | None], duckdb.DuckDBPyConnection] = {}
_DATABASES_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Entity frame
# --------------------------------------------------------------------------------------------


def _entity_timestamp_column(entity: pa.Table, view_names: list[str]) -> str:
    if DEFAULT_ENTITY_TIMESTAMP in entity.column_names:
        return DEFAULT_ENTITY_TIMESTAMP
    candidates = [f.name for f in entity.schema if pa.types.is_timestamp(f.type)]
    if len(candidates) == 1:
        return candidates[0]
    raise OfflineStoreInputError(
        f"entity frame for feature view(s) {view_names}: no timestamp column; name it "
        f"{DEFAULT_ENTITY_TIMESTAMP!r} (found timestamp columns {candidates})"
    )


def _entity_timestamps(entity: pa.Table, column: str, view_names: list[str]) -> pa.Array:
    """The entity timestamps as naive UTC microseconds, truncating finer precision."""
    values = entity.column(column).combine_chunks()
    if not pa.types.is_timestamp(values.type):
        raise OfflineStoreInputError(
            f"entity frame for feature view(s) {view_names}: column {column!r} has type "
            f"{values.type}; a timestamp is required"
        )
    # Arrow stores aware timestamps as UTC instants, so dropping the zone keeps UTC values.
    return values.cast(pa.timestamp(values.type.unit)).cast(pa.timestamp("us"), safe=False)


@dataclass(frozen=True)
class _Entity:
    """The entity frame as registered in DuckDB (row id, timestamp, join keys) and its
    timestamps as numpy, which the rank probe and the TTL test use without a round trip."""

    table: pa.Table
    ts_us: np.ndarray  # int64 microseconds; meaningless where not valid
    ts_valid: np.ndarray  # bool


# --------------------------------------------------------------------------------------------
# Point-in-time join of one feature view
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ViewPlan:
    """What to read from one feature view's source and how it lines up with the entity frame."""

    name: str  # the view name used in feature refs (projection.name_to_use())
    source: _Source
    entity_keys: list[str]  # entity frame columns
    source_keys: list[str]  # matching source columns
    source_features: list[str]  # source columns, in request order
    output_names: list[str]  # output column per feature
    ts_column: str
    created_column: str | None
    ts_sql: str
    created_sql: str | None
    ttl_us: int  # 0 means no lower bound
    # Entity-less retrieval's start_date: no candidate has an earlier event time.
    since_us: int | None = None
    # filter_by_created_timestamp: a candidate must also have been created at or before T.
    created_cutoff: bool = False


def _plan_view(
    config: RepoConfig,
    view: FeatureView,
    feature_refs: list[str],
    entity_columns: list[str],
    full_feature_names: bool,
    created_cutoff: bool = False,
) -> _ViewPlan:
    name = view.projection.name_to_use()
    if view.batch_source is None:
        raise OfflineStoreInputError(f"feature view {name!r} has no batch source")
    source = _open_source(config, view.batch_source, f"feature view {name!r}")
    reverse = {v: k for k, v in view.batch_source.field_mapping.items()}

    entity_keys, source_keys = [], []
    for column in view.entity_columns:
        entity_key = view.projection.join_key_map.get(column.name, column.name)
        if entity_key not in entity_columns:
            raise OfflineStoreInputError(
                f"feature view {name!r}: the entity frame has no join key column "
                f"{entity_key!r} (it has {entity_columns})"
            )
        entity_keys.append(entity_key)
        source_keys.append(reverse.get(column.name, column.name))

    prefix = f"{name}:"
    features = [ref[len(prefix) :] for ref in feature_refs if ref.startswith(prefix)]
    base_name = view.projection.name_alias or view.name
    output_names = [f"{base_name}__{f}" if full_feature_names else f for f in features]
    source_features = [reverse.get(f, f) for f in features]

    batch = view.batch_source
    ts_column = reverse.get(batch.timestamp_field, batch.timestamp_field)
    created_column = batch.created_timestamp_column or None
    if created_column:
        created_column = reverse.get(created_column, created_column)
    declared = [*source_keys, *source_features, ts_column]
    if created_column:
        declared.append(created_column)
    _require_columns(source, declared)

    ttl = view.ttl if isinstance(view.ttl, timedelta) else timedelta(0)
    return _ViewPlan(
        name=name,
        source=source,
        entity_keys=entity_keys,
        source_keys=source_keys,
        source_features=source_features,
        output_names=output_names,
        ts_column=ts_column,
        created_column=created_column,
        ts_sql=_timestamp_sql(source, ts_column),
        created_sql=_timestamp_sql(source, created_column) if created_column else None,
        ttl_us=max(0, ttl // timedelta(microseconds=1)),
        # Feast leaves views without a created column unaffected by the cutoff.
        created_cutoff=created_cutoff and created_column is not None,
    )


def _timestamp_literal(epoch_us: int) -> str:
    stamp = datetime(1970, 1, 1) + timedelta(microseconds=epoch_us)
    return f"TIMESTAMP '{stamp.isoformat(sep=' ')}'"


def _bit_length(value: int) -> int:
    return max(1, int(value).bit_length())


def _epoch_us(value: Any) -> int:
    """Microseconds since the epoch (UTC) of a parquet statistic, rounded down."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.value // 1000


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


class _Match(NamedTuple):
    """Per entity row (in entity order): the matched source row number, and whether a row
    matched within the TTL."""

    rows: np.ndarray
    found: np.ndarray


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


def _plans(
    config: RepoConfig,
    feature_views: list[FeatureView],
    feature_refs: list[str],
    entity_columns: list[str],
    full_feature_names: bool,
    created_cutoff: bool,
) -> list[_ViewPlan]:
    """One plan per view; raises Feast's FeatureNameCollisionError on clashing output names."""
    plans = [
        _plan_view(config, fv, feature_refs, entity_columns, full_feature_names, created_cutoff)
        for fv in feature_views
    ]
    seen = set(entity_columns)
    collisions = []
    for plan in plans:
        for output, ref_feature in zip(plan.output_names, plan.source_features, strict=True):
            if output in seen:
                collisions.append(f"{plan.name}:{ref_feature}")
            seen.add(output)
    if collisions:
        raise FeatureNameCollisionError(collisions, full_feature_names)
    return plans


def _entityless_retrieval(
    config: RepoConfig,
    feature_views: list[FeatureView],
    feature_refs: list[str],
    registry: BaseRegistry,
    project: str,
    full_feature_names: bool,
    created_cutoff: bool,
    start_date: datetime | None,
    end_date: datetime | None,
) -> AsofRetrievalJob:
    """Retrieval without entity rows: per entity with a row in [start, end], its features as
    of end_date, from rows with event time in [start, end] (see docs/point_in_time.md)."""
    from feast.utils import compute_non_entity_date_range

    view_names = [fv.projection.name_to_use() for fv in feature_views]
    # Feast's own defaults: end is now, start is end minus the longest TTL (else 30 days).
    start, end = compute_non_entity_date_range(feature_views, start_date, end_date)
    if start > end:
        raise OfflineStoreInputError(
            f"entity-less retrieval of feature view(s) {view_names}: start_date "
            f"{start.isoformat()} is after end_date {end.isoformat()}"
        )
    key_sets = {
        view.projection.name_to_use(): tuple(
            view.projection.join_key_map.get(c.name, c.name) for c in view.entity_columns
        )
        for view in feature_views
    }
    keyed = {keys for keys in key_sets.values() if keys}
    if len(keyed) > 1:
        raise OfflineStoreInputError(
            f"entity-less retrieval needs feature views with the same join keys (or none); "
            f"got {key_sets}"
        )
    keys = list(next(iter(keyed), ()))
    ts_column = DEFAULT_ENTITY_TIMESTAMP
    if ts_column in keys:
        raise OfflineStoreInputError(
            f"entity-less retrieval of feature view(s) {view_names}: a join key is named "
            f"{ts_column!r}, the entity timestamp column"
        )
    plans = _plans(
        config, feature_views, feature_refs, [*keys, ts_column], full_feature_names, created_cutoff
    )
    since_us = _epoch_us(start)
    plans = [dataclasses.replace(plan, since_us=since_us) for plan in plans]
    start_us, end_us = since_us, _epoch_us(end)

    def compute() -> pa.Table:
        entity = _entity_keys_in_range(config, plans, keys, start_us, end_us)
        stamp = pa.array(np.full(entity.num_rows, end_us), pa.timestamp("us", tz="UTC"))
        entity = entity.append_column(ts_column, stamp)
        return _historical_features(config, entity, plans, ts_column, view_names)

    return AsofRetrievalJob(
        compute=compute,
        full_feature_names=full_feature_names,
        on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
            feature_refs, project, registry
        ),
        metadata=RetrievalMetadata(
            features=feature_refs, keys=keys, min_event_timestamp=start, max_event_timestamp=end
        ),
        repo_path=config.repo_path,
    )


def _entity_keys_in_range(
    config: RepoConfig, plans: list[_ViewPlan], keys: list[str], start_us: int, end_us: int
) -> pa.Table:
    """The distinct non-null join-key tuples with a row in [start, end] in any keyed view,
    sorted; one row without columns when no view has join keys."""
    if not keys:
        return pa.table({"__asof_one": [0]}).drop_columns(["__asof_one"])
    parts = []
    with _connect(config) as con:
        for i, plan in enumerate(plans):
            if not plan.source_keys:
                continue
            columns = [*plan.source_keys, plan.ts_column]
            src, _ = plan.source.relation_sql(con, f"source_{i}", columns)
            by_name = dict(zip(plan.entity_keys, plan.source_keys, strict=True))
            select = ", ".join(f"{_q(by_name[k])} AS {_q(k)}" for k in keys)
            not_null = " AND ".join(f"{_q(by_name[k])} IS NOT NULL" for k in keys)
            parts.append(
                f"SELECT {select} FROM {src} WHERE {not_null} AND {plan.ts_sql} BETWEEN "
                f"{_timestamp_literal(start_us)} AND {_timestamp_literal(end_us)}"
            )
        order = ", ".join(_q(k) for k in keys)
        try:
            return con.sql(
                f"SELECT DISTINCT * FROM ({' UNION ALL BY NAME '.join(parts)}) ORDER BY {order}"
            ).to_arrow_table()
        except duckdb.Error as e:
            labels = [plan.source.label for plan in plans]
            raise OfflineStoreInputError(
                f"entity-less retrieval: reading the join keys of {labels} failed: {e}"
            ) from e


class AsofRetrievalJob(RetrievalJob):
    """A retrieval whose work runs when the result is asked for."""

    def __init__(
        self,
        compute: Callable[[], pa.Table],
        full_feature_names: bool = False,
        on_demand_feature_views: list[OnDemandFeatureView] | None = None,
        metadata: RetrievalMetadata | None = None,
        repo_path: Path | str | None = None,
    ) -> None:
        self._compute = compute
        self._full_feature_names = full_feature_names
        self._on_demand_feature_views = on_demand_feature_views or []
        self._metadata = metadata
        self._repo_path = repo_path

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._on_demand_feature_views

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._compute()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._compute().to_pandas()

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        """Write the result as a saved dataset: to `<uri>` when it ends in `.parquet`, else
        into the directory `<uri>` as `data.parquet`. Only a destination that is absent, an
        empty directory, or a saved dataset this store wrote (with `allow_overwrite`) is
        written; the file replaces the old one in one rename, so nothing is half-written."""
        if not isinstance(storage, SavedDatasetFileStorage):
            raise OfflineStoreInputError(
                f"AsofOfflineStore persists to SavedDatasetFileStorage only, not "
                f"{type(storage).__name__}"
            )
        uri = storage.file_options.uri
        if self._repo_path is not None:
            uri = FileSource.get_uri_for_file_path(Path(self._repo_path), uri)
        fs, path = _filesystem_and_path(uri)
        path = path.rstrip("/")
        is_dir = not path.endswith(".parquet")
        target = f"{path}/{SAVED_DATASET_FILE}" if is_dir else path
        state = _destination_state(fs, path, is_dir)
        if state == "ours" and not allow_overwrite:
            raise SavedDatasetLocationAlreadyExists(location=uri)
        if state not in ("ours", "free"):
            raise SavedDatasetDestinationNotOurs(uri, state)
        table = self.to_arrow(timeout=timeout)
        marker = json.dumps({"store": STORE_TYPE, "features": self.metadata.features})
        metadata = {**(table.schema.metadata or {}), SAVED_DATASET_KEY: marker.encode()}
        table = table.replace_schema_metadata(metadata)
        parent = target.rsplit("/", 1)[0] if "/" in target else "."
        fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{target.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, tmp, filesystem=fs)
            fs.move(tmp, target)
        finally:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)


# Saved datasets this store writes carry this key in the parquet key-value metadata; a
# directory destination holds one file of that name.
SAVED_DATASET_KEY = b"mlplat.saved_dataset"
SAVED_DATASET_FILE = "data.parquet"


class SavedDatasetDestinationNotOurs(SavedDatasetLocationAlreadyExists, OfflineStoreInputError):
    """A saved-dataset destination exists and holds something this store did not write."""

    def __init__(self, location: str, reason: str) -> None:
        FeastError.__init__(
            self,
            f"saved dataset destination {location!r} exists and is not a saved dataset written "
            f"by AsofOfflineStore ({reason}); it was left untouched (allow_overwrite replaces "
            "only saved datasets this store wrote)",
        )


def _is_ours(fs: pafs.FileSystem, path: str) -> bool:
    try:
        metadata = pq.read_schema(path, filesystem=fs).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return SAVED_DATASET_KEY in metadata


def _destination_state(fs: pafs.FileSystem, path: str, is_dir: bool) -> str:
    """'free', 'ours', or why the destination holds something else."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return "free"
    if info.type == pafs.FileType.File:
        if is_dir:
            return "a file where the directory destination should be"
        return "ours" if _is_ours(fs, path) else "a parquet file without the saved-dataset marker"
    if not is_dir:
        return "a directory where the file destination should be"
    entries = sorted(e.base_name for e in fs.get_file_info(pafs.FileSelector(path)))
    if not entries:
        return "free"
    if entries == [SAVED_DATASET_FILE] and _is_ours(fs, f"{path}/{SAVED_DATASET_FILE}"):
        return "ours"
    return f"a directory holding {entries[:5]}{' ...' if len(entries) > 5 else ''}"


class AsofOfflineStore(OfflineStore):
    """Point-in-time joins with DuckDB ASOF JOIN; see docs/point_in_time.md for the semantics."""

    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        view_names = [fv.projection.name_to_use() for fv in feature_views]
        cutoff = bool(kwargs.get("filter_by_created_timestamp"))
        if entity_df is None:
            return _entityless_retrieval(
                config,
                feature_views,
                feature_refs,
                registry,
                project,
                full_feature_names,
                cutoff,
                kwargs.get("start_date"),
                kwargs.get("end_date"),
            )
        if not isinstance(entity_df, pd.DataFrame):
            raise OfflineStoreInputError(
                f"AsofOfflineStore needs the entity rows as a pandas DataFrame for feature "
                f"view(s) {view_names}; got {type(entity_df).__name__} (SQL entity queries are "
                "not supported: the store reads parquet sources only)"
            )
        entity = pa.Table.from_pandas(entity_df, preserve_index=False)
        ts_column = _entity_timestamp_column(entity, view_names)
        # Validate everything now so a bad input fails at the call, before any work is done.
        _entity_timestamps(entity, ts_column, view_names)
        plans = _plans(
            config, feature_views, feature_refs, entity.column_names, full_feature_names, cutoff
        )
        # Arrow's min/max skip nulls and take a few ms where pandas' dropna took several.
        ts = entity.column(ts_column)
        bounds = pc.min_max(ts.cast(pa.timestamp("us", ts.type.tz), safe=False))
        min_ts, max_ts = bounds["min"].as_py(), bounds["max"].as_py()
        return AsofRetrievalJob(
            compute=lambda: _historical_features(config, entity, plans, ts_column, view_names),
            full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
                feature_refs, project, registry
            ),
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=[c for c in entity.column_names if c != ts_column],
                min_event_timestamp=min_ts,
                max_event_timestamp=max_ts,
            ),
            repo_path=config.repo_path,
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        return _pull(
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
            latest=True,
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        return _pull(
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
            latest=False,
        )


def _pull(
    config: RepoConfig,
    data_source: DataSource,
    join_key_columns: list[str],
    feature_name_columns: list[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
    latest: bool,
) -> RetrievalJob:
    """Rows of a source in [start, end] (inclusive), or only the latest row per join key.

    Columns come back under their source names, as Feast's materialization expects; the
    timestamp columns are UTC-aware.
    """
    source = _open_source(config, data_source, f"source {data_source.name!r}")
    columns = [*join_key_columns, *feature_name_columns, timestamp_field]
    if created_timestamp_column:
        columns.append(created_timestamp_column)
    _require_columns(source, columns)
    ts_sql = _timestamp_sql(source, timestamp_field)
    created_sql = (
        _timestamp_sql(source, created_timestamp_column) if created_timestamp_column else None
    )

    def compute() -> pa.Table:
        where = ["TRUE"]
        if start_date is not None:
            where.append(f"{ts_sql} >= TIMESTAMP '{_utc_naive(start_date).isoformat()}'")
        if end_date is not None:
            where.append(f"{ts_sql} <= TIMESTAMP '{_utc_naive(end_date).isoformat()}'")
        select = [_q(c) for c in [*join_key_columns, *feature_name_columns]]
        select.append(f"{ts_sql} AS {_q(timestamp_field)}")
        if created_timestamp_column:
            select.append(f"{created_sql} AS {_q(created_timestamp_column)}")
        if latest:
            order = [f"{ts_sql} DESC"]
            if created_sql:
                order.append(f"{created_sql} DESC NULLS LAST")
            order.append(f"{_SRC_ROW} DESC")
            partition = (
                f"PARTITION BY {', '.join(_q(c) for c in join_key_columns)} "
                if join_key_columns
                else ""
            )
            tail = f"QUALIFY row_number() OVER ({partition}ORDER BY {', '.join(order)}) = 1"
        else:
            tail = f"ORDER BY {_SRC_ROW}"
        with _connect(config) as con:
            src, _ = source.relation_sql(con, "source_table", columns)
            try:
                table = con.sql(
                    f"SELECT {', '.join(select)} FROM {src} WHERE {' AND '.join(where)} {tail}"
                ).to_arrow_table()
            except duckdb.Error as e:
                raise OfflineStoreInputError(f"{source.label}: read failed: {e}") from e
        for name in (timestamp_field, created_timestamp_column):
            if name:
                index = table.schema.get_field_index(name)
                utc = table.column(index).cast(pa.timestamp("us", tz="UTC"))
                table = table.set_column(index, name, utc)
        return table

    return AsofRetrievalJob(compute=compute)
