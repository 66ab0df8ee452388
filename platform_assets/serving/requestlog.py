"""The serving request log: one row per scored entity (or per admitted request that failed),
written to the lake as `<tenant>/serving/<model>` batches by a background thread, off the request
path. Requests refused before they are admitted never reach it (see serving/app.py).

The columns are the ones agreed with the drift and metrics readers (see docs/serving.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from platform_assets.resources.lake import LakeResource

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


class RequestLog:
    """Buffers rows per model and appends them to the lake every `max_rows` rows or
    `max_seconds`, whichever comes first, and on `close()`. `record` only appends to a list."""

    def __init__(self, lake: LakeResource, max_rows: int = 1000, max_seconds: float = 5.0):
        if max_rows < 1 or max_seconds <= 0:
            raise ValueError("the request log needs max_rows >= 1 and max_seconds > 0")
        self.lake = lake
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._rows: dict[LogSchema, list[dict[str, Any]]] = defaultdict(list)
        self._count = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self.batches_written = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="mlplat-request-log", daemon=True)
        self._thread.start()

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

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while True:
            with self._lock:
                while (
                    not self._closed and self._count < self.max_rows and time.monotonic() < deadline
                ):
                    self._wake.wait(max(0.0, deadline - time.monotonic()))
                taken, closed = self._take(), self._closed
            deadline = time.monotonic() + self.max_seconds
            self._write(taken)
            if closed:
                return

    def _write(self, taken: dict[LogSchema, list[dict[str, Any]]]) -> None:
        import pyarrow as pa

        for schema, rows in taken.items():
            if not rows:
                continue
            try:
                table = pa.Table.from_pylist(rows, schema=schema.arrow())
                self.lake.append(schema.tenant, KIND, schema.model, table)
            except Exception as exc:  # noqa: BLE001 (the log thread must outlive a lake outage)
                # The rows are lost, loudly: the service keeps serving, and /readyz says so.
                self.last_error = f"{len(rows)} row(s) of {schema.tenant}.{schema.model}: {exc}"
                log.error("request log: could not append %s", self.last_error)
                continue
            self.batches_written += 1

    def close(self) -> None:
        """Flush what is buffered and stop the thread."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join()
