"""The request log's spool: batches on local disk until the lake has them, bounded in bytes.

Every batch the request log takes is written here first, as one Arrow IPC file per batch
(`<folder>/<tenant>/<model>/<batch id>.arrow`, written to a temporary name, synced, then
renamed), and deleted once the lake holds it. The batch id starts with a sequence number that
orders the batches across models and restarts; the id and the time the batch was taken name its
object in the lake, so a batch written again after a crash lands on the same object
(docs/serving.md, "The request log").
A batch that would take the spool past its bound is dropped, and its rows are counted, in a file
that survives restarts. One process holds a spool at a time (an exclusive lock on its folder).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from platform_assets.tenancy.specs import NAME_RE

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("mlplat.serve")

SUFFIX = ".arrow"
TMP_PREFIX = ".tmp-"
LOCK = ".lock"
DROPPED = "dropped.json"  # rows dropped per model, over every run of the service
SET_ASIDE = "unreadable"  # spool files that do not read back as a batch
# A batch id is its sequence number (12 digits) and 8 random hex digits: it sorts in the order
# the batches were taken; the random part tells apart batches of two runs of the service (an
# empty spool starts the sequence again).
_FILE = re.compile(r"((\d{12})[0-9a-f]{8})\.arrow")
_META = "mlplat.request_log"  # the schema metadata key holding the batch's identity


class SpoolError(Exception):
    """A spool that cannot be used as asked (in use, or a bad bound)."""


@dataclass(frozen=True)
class Batch:
    """One spooled batch: where it is, and what names it in the lake."""

    seq: int
    tenant: str
    model: str
    batch_id: str
    at: datetime  # when the request log took it; its day and time name its lake object
    rows: int
    size: int
    path: Path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path` whole or not at all, on disk before the rename is (a crash leaves a
    temporary file, removed at the next start, never a part of a batch under its name)."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


class Spool:
    """The folder of one serving process's unsent request-log batches."""

    def __init__(self, folder: Path, max_bytes: int):
        if max_bytes < 1:
            raise SpoolError(f"request-log spool: max_bytes must be at least 1, not {max_bytes}")
        self.folder = Path(folder).resolve()
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = open(self.folder / LOCK, "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise SpoolError(
                f"request-log spool {self.folder} is in use by another process (pid {holder}): "
                "give each `mlplat serve` its own --spool-dir"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self.dropped_here = 0  # rows dropped by this process
        self.set_aside: list[str] = []  # files of this process's start that did not read back
        self._batches: dict[Path, Batch] = {}
        self._next_seq = 0
        try:
            self.dropped: Counter = Counter(self._read_dropped())  # (tenant, model) -> rows
            self._recover()
        except BaseException:
            self.close()
            raise

    # --- start -----------------------------------------------------------------------------

    def _read_dropped(self) -> dict[tuple[str, str], int]:
        path = self.folder / DROPPED
        if not path.exists():
            return {}
        try:
            counts = json.loads(path.read_text())
            out = {}
            for name, rows in counts.items():
                tenant, model = name.split(".")
                if not (NAME_RE.fullmatch(tenant) and NAME_RE.fullmatch(model)):
                    raise ValueError(f"{name!r} is not <tenant>.<model>")
                if not isinstance(rows, int) or rows < 0:
                    raise ValueError(f"{name}: {rows!r} is not a count of rows")
                out[(tenant, model)] = rows
            return out
        except (ValueError, AttributeError) as exc:
            raise SpoolError(
                f"request-log spool {path}: not the service's count of dropped rows ({exc}); "
                "move it away to start counting again"
            ) from exc

    def _recover(self) -> None:
        """Read back what an earlier run of the service left: its batches, in order. Temporary
        files (a write cut short) are removed; a file that does not read as a batch is set
        aside and named in the log and /readyz."""
        for path in sorted(self.folder.glob(f"*/*/{TMP_PREFIX}*")):
            log.warning("request-log spool: removing %s, a batch write that never completed", path)
            path.unlink()
        for path in sorted(self.folder.glob(f"*/*/*{SUFFIX}")):
            try:
                batch = self._describe(path)
            except (OSError, ValueError) as exc:
                self._set_aside(path, str(exc))
                continue
            self._batches[path] = batch
            self._next_seq = max(self._next_seq, batch.seq + 1)
        if self._batches:
            log.info(
                "request-log spool %s: %d batch(es) from an earlier run to send",
                self.folder,
                len(self._batches),
            )

    def _describe(self, path: Path) -> Batch:
        import pyarrow as pa

        match = _FILE.fullmatch(path.name)
        tenant, model = path.parent.parent.name, path.parent.name
        if match is None or not (NAME_RE.fullmatch(tenant) and NAME_RE.fullmatch(model)):
            raise ValueError("not named <tenant>/<model>/<batch id>.arrow")
        try:
            with pa.ipc.open_file(path) as reader:
                meta = json.loads((reader.schema.metadata or {})[_META.encode()])
                rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
            named = (meta["tenant"], meta["model"], meta["batch"])
            at = datetime.fromisoformat(meta["at"])
        except (pa.ArrowInvalid, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not an Arrow IPC batch of the request log ({exc!r})") from exc
        if named != (tenant, model, match.group(1)):
            raise ValueError("its metadata names another batch than its path")
        if at.tzinfo is None:
            raise ValueError("its time has no time zone")
        return Batch(
            int(match.group(2)), tenant, model, match.group(1), at, rows, path.stat().st_size, path
        )

    def _set_aside(self, path: Path, why: str) -> None:
        target = (
            self.folder / SET_ASIDE / f"{path.parent.parent.name}.{path.parent.name}.{path.name}"
        )
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        message = f"{path} did not read back ({why}); moved to {target}"
        log.error("request-log spool: %s", message)
        self.set_aside.append(message)

    # --- writing ---------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return sum(b.size for b in self._batches.values())

    def put(self, tenant: str, model: str, table: pa.Table, at: datetime) -> Batch | None:
        """Spool a batch; None when it was dropped (the spool full, or its disk refusing the
        write), its rows counted as dropped."""
        import pyarrow as pa

        if not (NAME_RE.fullmatch(tenant) and NAME_RE.fullmatch(model)):
            raise ValueError(f"request-log spool: {tenant}.{model} is not a <tenant>.<model>")
        batch_id = f"{self._next_seq:012d}{uuid.uuid4().hex[:8]}"
        meta = {"tenant": tenant, "model": model, "batch": batch_id, "at": at.isoformat()}
        table = table.replace_schema_metadata({_META: json.dumps(meta)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        used = self.used_bytes
        if used + len(data) > self.max_bytes:
            self.drop(
                tenant,
                model,
                table.num_rows,
                f"the spool is full ({used} of {self.max_bytes} bytes used, the batch is "
                f"{len(data)})",
            )
            return None
        folder = self.folder / tenant / model
        path = folder / f"{batch_id}{SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
        except OSError as exc:
            self.drop(tenant, model, table.num_rows, f"the spool could not be written ({exc})")
            return None
        batch = Batch(self._next_seq, tenant, model, batch_id, at, table.num_rows, len(data), path)
        self._batches[path] = batch
        self._next_seq += 1
        return batch

    def drop(self, tenant: str, model: str, rows: int, why: str) -> None:
        """Count rows that will never reach the lake, and say why in the service's log."""
        self.dropped[(tenant, model)] += rows
        self.dropped_here += rows
        log.error("request log: %d row(s) of %s.%s DROPPED: %s", rows, tenant, model, why)
        counts = {f"{t}.{m}": n for (t, m), n in sorted(self.dropped.items())}
        try:
            _write_atomically(self.folder / DROPPED, json.dumps(counts).encode())
        except OSError as exc:
            # Still counted in this process's metric and /readyz; only a restart would lose it.
            log.error("request-log spool: could not save the count of dropped rows: %s", exc)

    # --- sending ---------------------------------------------------------------------------

    def pending(self) -> list[Batch]:
        """The spooled batches, oldest first."""
        return sorted(self._batches.values(), key=lambda b: b.seq)

    def read(self, batch: Batch) -> pa.Table:
        """A batch's rows, as the request log took them (without the spool's metadata)."""
        import pyarrow as pa

        with pa.ipc.open_file(batch.path) as reader:
            return reader.read_all().replace_schema_metadata(None)

    def remove(self, batch: Batch) -> None:
        """Forget a batch the lake now holds."""
        batch.path.unlink()
        del self._batches[batch.path]

    def state(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(batches, bytes) spooled per (tenant, model)."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for b in self._batches.values():
            n, size = out.get((b.tenant, b.model), (0, 0))
            out[(b.tenant, b.model)] = (n + 1, size + b.size)
        return out

    def oldest(self) -> datetime | None:
        return min((b.at for b in self._batches.values()), default=None)

    def close(self) -> None:
        """Release the folder to the next process."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
