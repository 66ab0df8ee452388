"""Opening a parquet FileSource (local, remote or multi-file) for DuckDB, checking its columns,
and the SQL that reads its timestamps as naive UTC microseconds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlparse

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from feast.data_source import DataSource
from feast.infra.offline_stores.file_source import FileSource
from feast.repo_config import RepoConfig

from platform_assets.features.offline_store.config import _SRC_ROW, OfflineStoreInputError
from platform_assets.features.offline_store.layout import _sorted_by

# Feature values of matched rows are read from a local file in batches of row groups of at
# most this many bytes uncompressed (a larger row group is a batch by itself).
_VALUES_BATCH_BYTES = 512 * 2**20


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


def _timestamp_literal(epoch_us: int) -> str:
    stamp = datetime(1970, 1, 1) + timedelta(microseconds=epoch_us)
    return f"TIMESTAMP '{stamp.isoformat(sep=' ')}'"


def _epoch_us(value: Any) -> int:
    """Microseconds since the epoch (UTC) of a parquet statistic, rounded down."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.value // 1000
