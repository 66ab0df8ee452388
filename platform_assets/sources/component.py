"""The `Source` component: snapshots raw data into the lake and checks it before anyone reads it."""

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.data.generator import generate
from platform_assets.quality.checks import expectation_check, schema_check
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import (
    Placement,
    TeamComponent,
    asset_kwargs,
    expectations_check,
    team_asset,
)
from platform_assets.tenancy.automation import source_condition
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.isolation import IsolationError
from platform_assets.tenancy.specs import SourceSpec

if TYPE_CHECKING:  # pandas loads in the steps, not with the code location
    import pandas as pd


def inbox(lake_root: str, tenant: str) -> str:
    """Where a tenant's source files land: `<lake root>/<tenant>/inbox/`, under its own prefix.

    A Source's `path` is relative to it (the catalog refuses absolute paths, URIs and `..`, and
    `open_inbox_file` every link), so a tenant can only read files delivered to its own inbox.
    """
    return f"{lake_root.rstrip('/')}/{tenant}/inbox"


def open_inbox_file(lake_root: str, tenant: str, spec: SourceSpec) -> BinaryIO:
    """The file a Source reads, opened from the tenant's inbox without following any link.

    Each component below the (platform-owned) lake root, `<tenant>`, `inbox` and the parts of
    the Source's `path`, is opened relative to its parent with O_NOFOLLOW: a symlink anywhere,
    the inbox itself included, is refused, and no link swapped in between a check and the
    read can redirect it (the read is of the descriptor opened here). A file with more than one
    hard link is refused too.
    """
    parts = [tenant, "inbox", *str(spec.path).split("/")]
    fd = os.open(Path(lake_root).resolve(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            # O_NONBLOCK: a FIFO dropped into the inbox cannot hang the open.
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise _inbox_error(lake_root, tenant, spec, parts[: i + 1], exc) from exc
            os.close(fd)
            fd = child
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsolationError(
                f"source {tenant}/{spec.name}: {spec.path!r} is not a regular file in tenant "
                f"{tenant!r}'s inbox"
            )
        if info.st_nlink != 1:
            # A hard link is a second name for a file that may live under another tenant's
            # prefix; no path check can tell which name is the file's own.
            raise IsolationError(
                f"source {tenant}/{spec.name}: {spec.path!r} has {info.st_nlink} hard links: "
                f"the platform reads only files with one name, so none can be another tenant's "
                "file linked into this inbox; copy the file there instead"
            )
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return file


def _inbox_error(
    lake_root: str, tenant: str, spec: SourceSpec, parts: list[str], exc: OSError
) -> Exception:
    where = "/".join([lake_root.rstrip("/"), *parts])
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(where):
        return IsolationError(
            f"source {tenant}/{spec.name}: {where} is a symlink: the platform follows no link "
            f"in tenant {tenant!r}'s inbox (it could lead into another tenant's files); copy "
            "the file there instead"
        )
    message = f"source {tenant}/{spec.name}: cannot open {where}: {exc.strerror}"
    # Its own type: the inbox sensor reads a missing file as "nothing delivered yet".
    return FileNotFoundError(message) if exc.errno == errno.ENOENT else RuntimeError(message)


# The run tag naming the Source and the version of its inbox file a run was requested for,
# `<source>:<version>` (also the run's key): a run starts from one new file.
INBOX_FILE_TAG = "mlplat/inbox_file"


def requested_version(tags: Mapping[str, str], source: str) -> str | None:
    """The version of `source`'s file a run with `tags` was requested for, if any."""
    name, _, version = tags.get(INBOX_FILE_TAG, "").partition(":")
    return version if name == source and version else None


def file_version(info: os.stat_result) -> str:
    """A local inbox file's version: any write changes its size or modification time (in ns),
    and a file renamed over it its inode."""
    return f"{info.st_ino}-{info.st_size}-{info.st_mtime_ns}"


def read_source(
    spec: SourceSpec, file: BinaryIO | None = None, name: str | None = None
) -> "pd.DataFrame":
    """A generated dataset, or the rows of `file`, opened from the tenant's inbox (`name`
    says which in errors)."""
    import pandas as pd
    import pyarrow as pa

    if spec.generator:
        return generate(spec.generator)
    if file is None:
        raise ValueError(f"source {spec.name!r} reads a file: pass its path in the inbox")
    name = name or str(file)
    try:
        if str(spec.path).endswith(".csv"):
            timestamps = [c for c, t in spec.columns.items() if t == "timestamp"]
            df = pd.read_csv(file, dtype={c: "string" for c in timestamps})
            for column in timestamps:
                if column in df:
                    df[column] = _parse_timestamps(df[column], column)
            return df
        return pd.read_parquet(file)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise RuntimeError(f"source {spec.name!r}: cannot read {name}: {exc}") from exc


def load_source(
    lake: LakeResource | str, tenant: str, spec: SourceSpec, version: str | None = None
) -> "pd.DataFrame":
    """A Source's rows: generated, read from the tenant's inbox in an object store through the
    lake's filesystem, or from a local inbox file opened without following links
    (`open_inbox_file`). `lake` is the resource or its root.

    A local file must not change while it is read, and when `version` is given (the inbox
    sensor's run tag) it must be that version, the one the sensor saw complete: a writer that
    started again since could have left it half-written.
    """
    if not spec.path:
        return read_source(spec)
    lake = LakeResource(root=lake) if isinstance(lake, str) else lake
    if not lake.is_local:
        where = f"{inbox(lake.root, tenant)}/{spec.path}"
        fs, root = lake.filesystem()
        try:
            file = fs.open_input_file(f"{inbox(root, tenant)}/{spec.path}")
        except OSError as exc:
            raise RuntimeError(f"source {tenant}/{spec.name}: cannot open {where}: {exc}") from exc
        # An object store shows an object only once its upload completed, so any version read
        # here is whole; a newer one than the sensor saw gets a run of its own as well.
        with file:
            return read_source(spec, file, where)
    lake_root = lake.root.removeprefix("file://")  # a local path, opened as one
    where = f"{inbox(lake_root, tenant)}/{spec.path}"
    with open_inbox_file(lake_root, tenant, spec) as file:
        opened = file_version(os.fstat(file.fileno()))
        if version is not None and opened != version:
            raise RuntimeError(
                f"source {tenant}/{spec.name}: {where} changed after the inbox sensor saw it "
                f"complete (version {version}, now {opened}); not read, as it may be "
                "half-written: the sensor requests a run for the new file once it has settled"
            )
        df = read_source(spec, file, where)
        read = file_version(os.fstat(file.fileno()))
        if read != opened:
            raise RuntimeError(
                f"source {tenant}/{spec.name}: {where} changed while it was read (version "
                f"{opened}, then {read}): something is still writing it; run again once it is "
                "complete"
            )
        return df


def _parse_timestamps(values: "pd.Series", column: str) -> "pd.Series":
    """Parse a CSV column of timestamps; the first value that is not one is an error naming the
    column, its line in the file and the value (pandas would quietly keep the strings)."""
    import pandas as pd

    parsed = pd.to_datetime(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"column {column!r}, line {row + 2}: {values.iloc[row]!r} is not a timestamp"
        )
    return parsed


def _current_label(lake: LakeResource, tenant: str, name: str) -> str:
    try:
        return f"its previous snapshot {lake.current(tenant, 'sources', name).version}"
    except FileNotFoundError:
        return "no snapshot of it (none was ever committed)"


def source_assets(
    catalog: TenantCatalog, spec: SourceSpec, placement: Placement | None = None
) -> list[dg.AssetsDefinition]:
    """The asset `<tenant>/sources/<name>` with its `schema` and `expectations` checks."""
    tenant = catalog.tenant
    kwargs = asset_kwargs(
        tenant,
        "source",
        ["sources", spec.name],
        spec.description,
        {"parquet", "python"},
        source=catalog.file_of("source", spec.name),
        metadata={"declared_columns": dg.MetadataValue.json(spec.columns)},
        placement=placement,
    )
    key = kwargs["key"]

    @team_asset(
        **kwargs,
        check_specs=[
            dg.AssetCheckSpec(
                "schema",
                asset=key,
                blocking=True,
                description="Declared columns are present with their types",
            ),
            expectations_check(key),
        ],
        # The schedules and freshness targets of what is built from it (tenancy/automation.py).
        automation_condition=source_condition(catalog, spec.name),
    )
    def source_asset(
        context: dg.AssetExecutionContext, lake: LakeResource, pricing: PricingResource
    ):
        import pandas as pd
        import pyarrow as pa

        with meter(tenant.name, tenant.resources, pricing.catalog()) as usage:
            version = requested_version(context.run.tags, spec.name)
            df = load_source(lake, tenant.name, spec, version)
            schema = schema_check(df, spec.columns)
            present = [c for c in spec.columns if c in df.columns]
            extra = [c for c in df.columns if c not in spec.columns]
            # Staged: readers keep the last good snapshot until the blocking checks pass.
            staged = lake.write(
                tenant.name,
                "sources",
                spec.name,
                pa.Table.from_pandas(df[present + extra], preserve_index=False),
                commit=False,
            )
            quality = expectation_check(df, spec.expectations, f"{tenant.name}_{spec.name}")
            failed = [c.check_name for c in (schema, quality) if not c.passed]
            if not failed:
                lake.commit(staged)
        if failed:
            yield schema
            yield quality
            raise dg.Failure(
                description=(
                    f"source {tenant.name}/{spec.name}: blocking check(s) {', '.join(failed)} "
                    f"failed; snapshot {staged.version} stays staged and the lake keeps "
                    f"{_current_label(lake, tenant.name, spec.name)}"
                ),
                metadata={"staged_uri": staged.uri, "staged_version": staged.version},
            )
        ts = pd.to_datetime(df[spec.timestamp_column]) if spec.timestamp_column in df else None
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(staged.version),
            metadata={
                "dagster/row_count": len(df),
                "uri": staged.uri,
                "data_version": staged.version,
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(c, str(t)) for c, t in df.dtypes.items()]
                ),
                "null_counts": dg.MetadataValue.json(
                    {c: int(n) for c, n in df.isna().sum().items() if n}
                ),
                "duplicate_rows": int(df.duplicated().sum()),
                "min_timestamp": str(ts.min()) if ts is not None else "n/a",
                "max_timestamp": str(ts.max()) if ts is not None else "n/a",
                "preview": dg.MetadataValue.md(df.head(5).to_markdown(index=False)),
                **usage.metadata(pricing.catalog()),
            },
            check_results=[schema, quality],
        )

    return [source_asset]


class Source(TeamComponent, SourceSpec):
    """Raw data for one tenant: a built-in generated dataset or a parquet/CSV file or URI.

    The asset `<tenant>/sources/<name>` stages a parquet snapshot and runs two blocking checks:
    `schema` (every declared column present with its type) and `expectations` (the YAML's GX
    expectations); only when both pass does the snapshot become the current one.
    """
