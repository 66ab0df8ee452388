"""The offline lake: immutable, versioned parquet snapshots per asset, on any filesystem.

Layout under the root (a local path or a URI such as `s3://bucket/prefix`):

    <root>/<tenant>/<kind>/<name>/<version>.parquet   immutable snapshots (version: content hash)
    <root>/<tenant>/<kind>/<name>/current.json        pointer naming the current version
    <root>/<tenant>/<kind>/<name>/log/<day>/<id>.parquet   append-only batches (request logs)

A write puts a new snapshot and then, as its commit, the pointer: one small put, atomic on S3 (an
object appears whole or not at all) as on a local disk (rename). Readers follow the pointer, so a
failed write, or a staged snapshot never committed, leaves the previous version current.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import dagster as dg

from platform_assets.tenancy.isolation import check_write

if TYPE_CHECKING:  # pyarrow loads in the steps, not with the code location
    import pyarrow as pa
    import pyarrow.fs as pafs

POINTER = "current.json"
DEFAULT_RETENTION_DAYS = 90.0
_VERSION = re.compile(r"[0-9a-f]{16}")
_BATCH = re.compile(r"[0-9a-f]{12,32}")
_CHUNK = 8 * 2**20


@dataclass(frozen=True)
class Snapshot:
    """One immutable version of an asset's table."""

    tenant: str
    kind: str
    name: str
    version: str
    uri: str
    written_at: datetime

    @property
    def label(self) -> str:
        return f"{self.tenant}/{self.kind}/{self.name}@{self.version}"


def _secret(value: str | None) -> str | None:
    """Resolve a `dg.EnvVar` where the lake is used outside a Dagster step (CLI, tests)."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


@lru_cache(maxsize=8)
def _s3(
    endpoint: str | None, region: str | None, key: str | None, secret: str | None
) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    kwargs = {"endpoint_override": endpoint, "region": region}
    if key and secret:
        kwargs |= {"access_key": key, "secret_key": secret}
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v})


class LakeResource(dg.ConfigurableResource):
    """Parquet snapshots; every tenant writes under `<root>/<tenant>/` and nowhere else.

    For an `s3://` root the endpoint is `endpoint_url`, else the standard `AWS_ENDPOINT_URL_S3`
    or `AWS_ENDPOINT_URL`, else AWS; credentials are `access_key_id`/`secret_access_key` (given
    as `dg.EnvVar`) or the AWS default chain (environment, instance or pod role).
    """

    root: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    retention_days: float = DEFAULT_RETENTION_DAYS

    # ----------------------------------------------------------------------------------------
    # Where things are
    # ----------------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        scheme = self.root.partition("://")[0] if "://" in self.root else ""
        return scheme in ("", "file")

    def s3_endpoint(self) -> str | None:
        """The S3 endpoint readers must use (None: AWS itself, or not on S3)."""
        if not self.root.startswith("s3://"):
            return None
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The pyarrow filesystem holding the lake and the root's path inside it."""
        import pyarrow as pa
        import pyarrow.fs as pafs

        if self.is_local:
            path = self.root.removeprefix("file://")
            return pafs.LocalFileSystem(), os.path.abspath(path)
        if self.root.startswith("s3://"):
            fs = _s3(
                self.s3_endpoint(),
                self.region,
                _secret(self.access_key_id),
                _secret(self.secret_access_key),
            )
            return fs, self.root.removeprefix("s3://").rstrip("/")
        try:
            fs, path = pafs.FileSystem.from_uri(self.root)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            # Schemes pyarrow has no filesystem for (memory://, gs:// via gcsfs...) go through
            # fsspec, wrapped so that every reader sees a pyarrow filesystem.
            import fsspec

            spec, path = fsspec.core.url_to_fs(self.root)
            fs = pafs.PyFileSystem(pafs.FSSpecHandler(spec))
        return fs, path.rstrip("/")

    def s3_client(self):
        """boto3's S3 client on the endpoint, region and credentials of the lake's own filesystem:
        what pre-signs the URLs a trainer pod reads its split from and posts its model to."""
        if not self.root.startswith("s3://"):
            raise ValueError(
                f"lake root {self.root} is not on S3: a trainer pod exchanges files with the "
                "platform through pre-signed URLs of an s3:// lake"
            )
        import boto3
        from botocore.config import Config

        kwargs = {
            "endpoint_url": self.s3_endpoint(),
            "region_name": self.region,
            "aws_access_key_id": _secret(self.access_key_id),
            "aws_secret_access_key": _secret(self.secret_access_key),
        }
        config = Config(signature_version="s3v4")
        return boto3.client("s3", config=config, **{k: v for k, v in kwargs.items() if v})

    def s3_folder(self, tenant: str, kind: str, name: str) -> tuple[str, str]:
        """The bucket and key prefix (ending in `/`) of `<root>/<tenant>/<kind>/<name>/` in an
        `s3://` lake, checked as every write of the tenant is."""
        bucket, _, key = self._folder(tenant, kind, name).partition("/")
        return bucket, f"{key}/"

    def _uri(self, path: str) -> str:
        """What a reader outside this resource opens: a local path or `<scheme>://...`."""
        if self.is_local:
            return path
        return f"{self.root.partition('://')[0]}://{path}"

    def _folder(self, tenant: str, kind: str, name: str) -> str:
        fs, base = self.filesystem()
        folder = f"{base}/{tenant}/{kind}/{name}"
        check_write(self._uri(base), tenant, self._uri(folder))
        return folder

    # ----------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------

    def write(
        self, tenant: str, kind: str, name: str, table: pa.Table, *, commit: bool = True
    ) -> Snapshot:
        """Write a new immutable snapshot; with `commit=False` it is staged, not yet current.

        The parquet file is written to a local temporary file first and hashed; the version
        is that hash. Only a whole file ever lands under the version's name, and a version that
        exists is not written again (its `written_at` is when that content was first written).
        """
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        folder = self._folder(tenant, kind, name)
        fs, _ = self.filesystem()
        if self.is_local:
            fs.create_dir(folder, recursive=True)
        # Locally the temporary file sits beside its target so that the rename is atomic.
        fd, tmp = tempfile.mkstemp(
            prefix=".staging-", suffix=".parquet", dir=folder if self.is_local else None
        )
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            version = _file_hash(tmp)
            target = f"{folder}/{version}.parquet"
            try:
                # Same content, same version: a snapshot that exists is already this file.
                if fs.get_file_info(target).type == pafs.FileType.File:
                    pass
                elif self.is_local:
                    os.replace(tmp, target)
                else:
                    with open(tmp, "rb") as src, fs.open_output_stream(target) as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
            except OSError as exc:
                raise OSError(
                    f"lake: writing snapshot {tenant}/{kind}/{name}@{version} to "
                    f"{self._uri(target)} failed, the current snapshot is unchanged: {exc}"
                ) from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        snapshot = self._stat(tenant, kind, name, version)
        if commit:
            self.commit(snapshot)
        return snapshot

    def commit(self, snapshot: Snapshot) -> None:
        """Make a (staged) snapshot current: one put of the asset's pointer."""
        folder = self._folder(snapshot.tenant, snapshot.kind, snapshot.name)
        fs, _ = self.filesystem()
        pointer = json.dumps(
            {"version": snapshot.version, "committed_at": datetime.now(UTC).isoformat()}
        ).encode()
        try:
            self._stat(snapshot.tenant, snapshot.kind, snapshot.name, snapshot.version)
            self._put(fs, f"{folder}/{POINTER}", pointer)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise OSError(
                f"lake: committing snapshot {snapshot.label} failed, the current snapshot is "
                f"unchanged: {exc}"
            ) from exc

    def attach(self, snapshot: Snapshot, extension: str, data: bytes) -> str:
        """Store an export of a snapshot's content beside it (`<version>.<extension>`, e.g. a
        CSV for people); it is pruned with its snapshot. Returns its URI."""
        if not re.fullmatch(r"[a-z0-9]+", extension) or extension == "parquet":
            raise ValueError(f"{snapshot.label}: bad export extension {extension!r}")
        folder = self._folder(snapshot.tenant, snapshot.kind, snapshot.name)
        fs, _ = self.filesystem()
        path = f"{folder}/{snapshot.version}.{extension}"
        self._put(fs, path, data)
        return self._uri(path)

    def _put(self, fs: pafs.FileSystem, path: str, data: bytes) -> None:
        if self.is_local:
            fd, tmp = tempfile.mkstemp(prefix=".staging-", dir=os.path.dirname(path))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return
        with fs.open_output_stream(path) as out:
            out.write(data)

    def append(
        self,
        tenant: str,
        kind: str,
        name: str,
        table: pa.Table,
        *,
        batch: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """Add one immutable batch to an append-only log (e.g. a model's request log), filed
        under the UTC day of `at` (default: now) and named by its time and `batch` (12 to 32
        hex digits; default: random); returns its URI. A batch lands whole or not at all, and
        appending the same batch id and time again writes the same object, not a second one:
        what makes a retried append exactly-once."""
        import uuid

        if batch is None:
            batch = uuid.uuid4().hex[:12]
        elif not _BATCH.fullmatch(batch):
            raise ValueError(
                f"lake log {tenant}/{kind}/{name}: batch id {batch!r} is not 12-32 hex"
            )
        if at is None:
            at = datetime.now(UTC)
        elif at.tzinfo is None:
            raise ValueError(f"lake log {tenant}/{kind}/{name}: batch time {at} has no time zone")
        at = at.astimezone(UTC)
        folder = f"{self._folder(tenant, kind, name)}/log/{at:%Y-%m-%d}"
        fs, _ = self.filesystem()
        if self.is_local:
            fs.create_dir(folder, recursive=True)
        # Named by time first: readers list a log in the order its batches were taken.
        path = f"{folder}/{at:%H%M%S%f}-{batch}.parquet"
        try:
            self._put(fs, path, _parquet_bytes(table))
        except OSError as exc:
            raise OSError(f"lake: appending to {tenant}/{kind}/{name} failed: {exc}") from exc
        return self._uri(path)

    def batches(
        self, tenant: str, kind: str, name: str, since: datetime | None = None
    ) -> pa.Table | None:
        """Every batch of an append-only log written on or after `since`'s UTC day (all when
        None), as one table; None when the log has no batch."""
        import pyarrow.dataset as ds

        paths = self.log_files(tenant, kind, name, since)
        if not paths:
            return None
        return ds.dataset(paths, format="parquet", filesystem=self.filesystem()[0]).to_table()

    def log_files(
        self, tenant: str, kind: str, name: str, since: datetime | None = None
    ) -> list[str]:
        """The paths (in `filesystem()`) of an append-only log's batches written on or after
        `since`'s UTC day, oldest first: for readers that keep track of what they have read."""
        import pyarrow.fs as pafs

        fs, base = self.filesystem()
        folder = f"{base}/{tenant}/{kind}/{name}/log"
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        day = f"{since.astimezone(UTC):%Y-%m-%d}" if since else ""
        return sorted(
            info.path
            for info in fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and info.path[len(folder) + 1 :].split("/", 1)[0] >= day
        )

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------

    def current(self, tenant: str, kind: str, name: str) -> Snapshot:
        """The committed snapshot; FileNotFoundError naming the asset when there is none."""
        fs, base = self.filesystem()
        pointer = f"{base}/{tenant}/{kind}/{name}/{POINTER}"
        try:
            with fs.open_input_stream(pointer) as f:
                version = json.loads(f.read())["version"]
        except FileNotFoundError:
            raise FileNotFoundError(
                f"lake asset {tenant}/{kind}/{name} has no committed snapshot under "
                f"{self._uri(base)}: materialize {tenant}/{kind}/{name} first"
            ) from None
        return self.snapshot(tenant, kind, name, version)

    def snapshot(self, tenant: str, kind: str, name: str, version: str) -> Snapshot:
        """One snapshot by version; FileNotFoundError naming it if deleted or never written."""
        if not _VERSION.fullmatch(version):
            raise ValueError(
                f"lake snapshot {tenant}/{kind}/{name}@{version}: a version is 16 hex digits"
            )
        return self._stat(tenant, kind, name, version)

    def _stat(self, tenant: str, kind: str, name: str, version: str) -> Snapshot:
        import pyarrow.fs as pafs

        fs, base = self.filesystem()
        path = f"{base}/{tenant}/{kind}/{name}/{version}.parquet"
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(
                f"lake snapshot {tenant}/{kind}/{name}@{version} does not exist at "
                f"{self._uri(path)}: it was pruned after the retention period "
                f"({self.retention_days:g} days) or never written"
            )
        return Snapshot(tenant, kind, name, version, self._uri(path), _utc(info.mtime))

    def read(self, tenant: str, kind: str, name: str, version: str | None = None) -> pa.Table:
        """The current snapshot's table, or the given version's."""
        import pyarrow.parquet as pq

        snap = (
            self.current(tenant, kind, name)
            if version is None
            else self.snapshot(tenant, kind, name, version)
        )
        fs, base = self.filesystem()
        return pq.read_table(f"{base}/{tenant}/{kind}/{name}/{snap.version}.parquet", filesystem=fs)

    def names(self, tenant: str, kind: str) -> list[str]:
        """Names of a tenant's assets of one kind that have a committed snapshot."""
        import pyarrow.fs as pafs

        fs, base = self.filesystem()
        folder = f"{base}/{tenant}/{kind}"
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        return sorted(
            info.path[len(folder) + 1 :].rsplit("/", 1)[0]
            for info in fs.get_file_info(selector)
            if info.base_name == POINTER and info.type == pafs.FileType.File
        )

    def tenants(self) -> list[str]:
        """The top-level prefixes (tenants, and the platform) that hold anything."""
        import pyarrow.fs as pafs

        fs, base = self.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    # ----------------------------------------------------------------------------------------
    # Retention
    # ----------------------------------------------------------------------------------------

    def prune(self, retention_days: float | None = None) -> list[Snapshot]:
        """Delete the snapshots (and their exports) that are not current and were written more
        than `retention_days` ago (default: the platform's `retention_days`). Leftover
        temporary files of failed local writes older than that go too."""
        import pyarrow.fs as pafs

        days = self.retention_days if retention_days is None else retention_days
        if not days >= 0:
            raise ValueError(f"retention_days must be a number >= 0, not {days!r}")
        cutoff = datetime.now(UTC) - timedelta(days=days)
        fs, base = self.filesystem()
        files = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        by_folder: dict[str, list[pafs.FileInfo]] = {}
        for info in files:
            if info.type == pafs.FileType.File:
                by_folder.setdefault(info.path.rsplit("/", 1)[0], []).append(info)
        deleted = []
        for folder, infos in sorted(by_folder.items()):
            parts = folder[len(base) + 1 :].split("/")
            if len(parts) != 3:
                continue  # not an asset's folder
            names = {i.base_name for i in infos}
            current = None
            if POINTER in names:
                with fs.open_input_stream(f"{folder}/{POINTER}") as f:
                    current = json.loads(f.read())["version"]
            for info in sorted(infos, key=lambda i: i.base_name):
                if info.mtime is None:
                    continue  # a filesystem that keeps no times: no age, nothing to prune
                stem, _, ext = info.base_name.partition(".")
                old = _utc(info.mtime) < cutoff
                if info.base_name.startswith(".staging-") and old:
                    fs.delete_file(info.path)
                elif _VERSION.fullmatch(stem) and stem != current and old:
                    fs.delete_file(info.path)
                    if ext == "parquet":
                        tenant, kind, name = parts
                        deleted.append(
                            Snapshot(
                                tenant, kind, name, stem, self._uri(info.path), _utc(info.mtime)
                            )
                        )
        return deleted

    def prune_logs(self, retention_days: float | None = None) -> list[str]:
        """Delete the append-only logs' batches (request logs) filed under a UTC day that ended
        more than `retention_days` ago (default: the platform's); returns their URIs. A whole
        day goes at once, so what is left of a log is always every batch since some day."""
        import pyarrow.fs as pafs

        days = self.retention_days if retention_days is None else retention_days
        if not days >= 0:
            raise ValueError(f"retention_days must be a number >= 0, not {days!r}")
        first_kept = f"{datetime.now(UTC) - timedelta(days=days):%Y-%m-%d}"
        fs, base = self.filesystem()
        files = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        deleted = []
        for info in sorted(files, key=lambda i: i.path):
            # <tenant>/<kind>/<name>/log/<day>/<batch>.parquet
            parts = info.path[len(base) + 1 :].split("/")
            if (
                info.type == pafs.FileType.File
                and len(parts) == 6
                and parts[3] == "log"
                and parts[4] < first_kept
            ):
                fs.delete_file(info.path)
                deleted.append(self._uri(info.path))
        return deleted


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _utc(value: datetime | None) -> datetime:
    if value is None:  # filesystems without modification times
        return datetime.fromtimestamp(0, UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
