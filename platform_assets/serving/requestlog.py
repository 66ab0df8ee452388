"""The serving request log: one row per scored entity (or per admitted request that failed),
written to the lake as `<tenant>/serving/<model>` batches by background threads, off the request
path, through a spool on local disk that keeps them while the lake is down (serving/spool.py).
Requests refused before they are admitted never reach it (see serving/app.py).

The columns are the ones agreed with the drift and metrics readers (see docs/serving.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from platform_assets.resources.lake import LakeResource
    from platform_assets.serving.spool import Spool

log = logging.getLogger("mlplat.serve")

KIND = "serving"


def base_fields() -> list[pa.Field]:
    import pyarrow as pa

    utc = pa.timestamp("us", tz="UTC")
    return [
        pa.field("request_id", pa.string()),
        pa.field("ts", utc),
        pa.field("tenant", pa.string()),
        pa.field("model", pa.string()),
        pa.field("model_version", pa.int64()),
        pa.field("status", pa.int32()),
        pa.field("error", pa.string()),
        pa.field("latency_ms", pa.float64()),
        pa.field("prediction", pa.float64()),
        pa.field("features_as_of", utc),
    ]


@dataclass(frozen=True)
class LogSchema:
    """The columns of one model's log: the fixed ones, its entity join keys (strings) and its
    features (float64, named as in the training set)."""

    tenant: str
    model: str
    entity_columns: tuple[str, ...]
    feature_columns: tuple[str, ...]

    def arrow(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema(
            [
                *base_fields(),
                *(pa.field(c, pa.string()) for c in self.entity_columns),
                *(pa.field(c, pa.float64()) for c in self.feature_columns),
            ]
        )


@dataclass(frozen=True)
class LogState:
    """What the request log holds back and has lost, for /readyz and the metrics port."""

    spooled: dict[tuple[str, str], tuple[int, int]]  # (tenant, model) -> (batches, bytes)
    dropped: dict[tuple[str, str], int]  # rows, over every run of the service on this spool
    limit_bytes: int
    oldest_spooled: datetime | None
    last_error: str | None
    set_aside: list[str]


class RequestLog:
    """Buffers rows per model; every `max_rows` rows or `max_seconds`, whichever comes first, and
    on `close()`, a collector thread takes them as one batch per model into the spool
    (serving/spool.py), and a flusher thread appends the spooled batches to the lake in order,
    deleting each once the lake has it. While the lake is down the batches wait in the spool
    and the flusher retries with backoff (`retry_seconds`, doubling up to `max_retry_seconds`).
    `record` only appends to a list."""

    def __init__(
        self,
        lake: LakeResource,
        spool: Spool,
        max_rows: int = 1000,
        max_seconds: float = 5.0,
        *,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 30.0,
        close_seconds: float = 10.0,
    ):
        if max_rows < 1 or max_seconds <= 0:
            raise ValueError("the request log needs max_rows >= 1 and max_seconds > 0")
        if not 0 < retry_seconds <= max_retry_seconds or close_seconds < 0:
            raise ValueError(
                "the request log needs 0 < retry_seconds <= max_retry_seconds and "
                "close_seconds >= 0"
            )
        self.lake = lake
        self.spool = spool
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.close_seconds = close_seconds
        self._rows: dict[LogSchema, list[dict[str, Any]]] = defaultdict(list)
        self._count = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        # The spool is the flusher's: the collector adds to it under this lock, the flusher
        # reads and removes under it, and never holds it while the lake is written.
        self._spool_lock = threading.Lock()
        self._flush_wake = threading.Condition(self._spool_lock)
        self._flush_stop = False
        self.batches_written = 0
        self.last_error: str | None = None
        self._collector = threading.Thread(
            target=self._collect, name="mlplat-request-log", daemon=True
        )
        self._flusher = threading.Thread(
            target=self._flush, name="mlplat-request-log-flush", daemon=True
        )
        self._flusher.start()
        self._collector.start()

    def record(self, schema: LogSchema, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the request log is closed")
            self._rows[schema].extend(rows)
            self._count += len(rows)
            if self._count >= self.max_rows:
                self._wake.notify()

    def _take(self) -> dict[LogSchema, list[dict[str, Any]]]:
        taken, self._rows, self._count = self._rows, defaultdict(list), 0
        return taken

    def _collect(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while True:
            with self._lock:
                while (
                    not self._closed and self._count < self.max_rows and time.monotonic() < deadline
                ):
                    self._wake.wait(max(0.0, deadline - time.monotonic()))
                taken, closed = self._take(), self._closed
            deadline = time.monotonic() + self.max_seconds
            self._spool(taken)
            if closed:
                return

    def _spool(self, taken: dict[LogSchema, list[dict[str, Any]]]) -> None:
        import pyarrow as pa

        at = datetime.now(UTC)
        for schema, rows in taken.items():
            if not rows:
                continue
            try:
                table = pa.Table.from_pylist(rows, schema=schema.arrow())
            except (pa.ArrowException, TypeError, ValueError) as exc:
                # A row the log's own schema does not take (a bug of the service): counted and
                # logged as dropped; the thread goes on with the other models' rows.
                with self._spool_lock:
                    self.spool.drop(schema.tenant, schema.model, len(rows), f"not a log row: {exc}")
                continue
            with self._spool_lock:
                if self.spool.put(schema.tenant, schema.model, table, at) is not None:
                    self._flush_wake.notify()

    def _flush(self) -> None:
        """Send the spool to the lake, oldest first, until the request log closes; after a
        failure, again after a backoff. At close, one last attempt; what the lake does not take
        then stays spooled for the next start."""
        delay = self.retry_seconds
        retry_at = 0.0
        while True:
            with self._spool_lock:
                while not self._flush_stop and (
                    not self.spool.pending() or time.monotonic() < retry_at
                ):
                    timeout = retry_at - time.monotonic() if self.spool.pending() else None
                    self._flush_wake.wait(timeout)
                stop = self._flush_stop
            # The last pass is bounded: a lake that is down must not hold up the shutdown.
            if self._send(time.monotonic() + self.close_seconds if stop else None):
                delay, retry_at = self.retry_seconds, 0.0
            else:
                retry_at = time.monotonic() + delay
                delay = min(delay * 2, self.max_retry_seconds)
            if stop:
                return

    def _send(self, deadline: float | None = None) -> bool:
        """One pass over the spool: each model's batches in order, a model stopping at its first
        batch the lake refuses (the others go on), all of them at `deadline` (monotonic time).
        True when everything was sent."""
        with self._spool_lock:
            pending = self.spool.pending()
        refused: set[tuple[str, str]] = set()
        for batch in pending:
            if deadline is not None and time.monotonic() > deadline:
                return False
            model = (batch.tenant, batch.model)
            if model in refused:
                continue
            try:
                table = self.spool.read(batch)
                # Named by the batch, so a batch sent again (its first send's answer lost, or
                # the service stopped before deleting it) lands on the same object.
                self.lake.append(
                    batch.tenant, KIND, batch.model, table, batch=batch.batch_id, at=batch.at
                )
            except Exception as exc:  # noqa: BLE001 (the flusher must outlive any lake failure)
                # Kept, not lost: the batch stays spooled, retried; /readyz and the spool
                # metrics say so.
                refused.add(model)
                self.last_error = (
                    f"{batch.tenant}.{batch.model} batch {batch.seq}: {type(exc).__name__}: {exc}"
                )
                log.error("request log: the lake refused %s; kept in the spool", self.last_error)
                continue
            with self._spool_lock:
                self.spool.remove(batch)
            self.batches_written += 1
        if not refused:
            self.last_error = None
        return not refused

    def state(self) -> LogState:
        with self._spool_lock:
            return LogState(
                spooled=self.spool.state(),
                dropped=dict(self.spool.dropped),
                limit_bytes=self.spool.max_bytes,
                oldest_spooled=self.spool.oldest(),
                last_error=self.last_error,
                set_aside=list(self.spool.set_aside),
            )

    def close(self) -> None:
        """Spool what is buffered, send what the lake takes within `close_seconds`, stop both
        threads and release the spool (what is left there is sent by the next process on the
        same spool)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._collector.join()
        with self._spool_lock:
            self._flush_stop = True
            self._flush_wake.notify()
        self._flusher.join()
        self.spool.close()
