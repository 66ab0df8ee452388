"""The request log's spool on a real disk, with real lakes: a local one, and an S3 endpoint
nothing listens on (what the lake is while its server is down). The whole service through an
outage of a real S3 server is in test_app.py."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from platform_assets.observability import series as S
from platform_assets.observability import serving as serving_metrics
from platform_assets.resources.lake import LakeResource
from platform_assets.services.stack import free_port
from platform_assets.serving.requestlog import KIND, LogSchema, RequestLog
from platform_assets.serving.spool import Spool, SpoolError
from tests.conftest import S3_CREDENTIALS

SCHEMA = LogSchema("ridehail", "driver_churn", ("driver_id",), ("trips_7d",))
MODEL = (SCHEMA.tenant, SCHEMA.model)


def rows(*request_ids: str) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            "request_id": rid,
            "ts": now,
            "tenant": SCHEMA.tenant,
            "model": SCHEMA.model,
            "model_version": 1,
            "status": 200,
            "error": None,
            "latency_ms": 1.5,
            "prediction": 0.25,
            "features_as_of": now,
            "driver_id": "d0001",
            "trips_7d": 3.0,
        }
        for rid in request_ids
    ]


def logged(lake: LakeResource) -> list[str]:
    table = lake.batches(SCHEMA.tenant, KIND, SCHEMA.model)
    return [] if table is None else table.column("request_id").to_pylist()


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.fixture
def down_lake(monkeypatch) -> LakeResource:
    """An S3 lake whose endpoint refuses connections: the server is down."""
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return LakeResource(
        root="s3://mlplat-down/lake", endpoint_url=f"http://127.0.0.1:{free_port()}"
    )


@pytest.fixture
def local_lake(tmp_path) -> LakeResource:
    return LakeResource(root=str(tmp_path / "lake"))


def one_batch_bytes(tmp_path: Path) -> int:
    """The size one batch of `rows("r0")` takes in a spool."""
    spool = Spool(tmp_path / "measure", 1 << 20)
    try:
        table = pa.Table.from_pylist(rows("r0"), schema=SCHEMA.arrow())
        return spool.put(*MODEL, table, datetime.now(UTC)).size
    finally:
        spool.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def metrics_port() -> Iterator[list]:
    """Start the request log's metrics endpoint with `start(log)`; yields [start, port]."""
    servers = []

    def start(log: RequestLog) -> int:
        server, thread = serving_metrics.serve(log.state, [MODEL], "127.0.0.1", free_port())
        servers.append((server, thread))
        return server.server_port

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=10)


def test_a_full_spool_drops_rows_counts_them_and_the_metric_shows_it(
    tmp_path, down_lake, metrics_port
):
    size = one_batch_bytes(tmp_path)
    folder = tmp_path / "spool"
    # Room for two one-row batches: the third and fourth are dropped while the lake is down.
    log = RequestLog(down_lake, Spool(folder, 2 * size + size // 2), 1, 60, retry_seconds=0.05)
    port = metrics_port(log)

    def taken() -> int:  # batches spooled and rows dropped (one row a batch)
        state = log.state()
        return sum(n for n, _ in state.spooled.values()) + sum(state.dropped.values())

    for i, rid in enumerate(("r1", "r2", "r3", "r4"), 1):
        log.record(SCHEMA, rows(rid))
        assert wait_for(lambda i=i: taken() == i)
    assert log.state().dropped == {MODEL: 2}
    state = log.state()
    assert state.spooled == {MODEL: (2, state.spooled[MODEL][1])}
    assert wait_for(lambda: log.state().last_error)
    assert log.state().last_error.startswith("ridehail.driver_churn batch 0: OSError: ")
    samples = scrape(port)
    labels = (("model", "driver_churn"), ("tenant", "ridehail"))
    assert samples[(S.SERVING_LOG_DROPPED.samples[0], labels)] == 2
    assert samples[(S.SERVING_LOG_SPOOLED_BATCHES.name, labels)] == 2
    assert samples[(S.SERVING_LOG_SPOOL_LIMIT.name, (("tenant", "platform"),))] == (
        2 * size + size // 2
    )
    assert samples[(S.SERVING_LOG_OLDEST_SPOOLED.name, (("tenant", "platform"),))] > 0
    log.close()
    # The count outlives the process: a new one on the same spool starts from it.
    again = Spool(folder, 2 * size + size // 2)
    try:
        assert again.dropped == {MODEL: 2} and again.dropped_here == 0
        assert [b.seq for b in again.pending()] == [0, 1]
    finally:
        again.close()


def test_a_batch_the_lake_got_before_a_crash_is_not_written_twice(tmp_path, local_lake):
    """The service stopped between the lake's write and the spool file's deletion: the same
    batch is sent again at the next start, onto the same object."""
    folder = tmp_path / "spool"
    spool = Spool(folder, 1 << 20)
    at = datetime.now(UTC)
    first = spool.put(*MODEL, pa.Table.from_pylist(rows("a", "b"), schema=SCHEMA.arrow()), at)
    second = spool.put(*MODEL, pa.Table.from_pylist(rows("c"), schema=SCHEMA.arrow()), at)
    local_lake.append(
        "ridehail", KIND, "driver_churn", spool.read(first), batch=first.batch_id, at=at
    )
    spool.close()  # ... and the process died here
    log = RequestLog(local_lake, Spool(folder, 1 << 20), 1000, 60)
    assert wait_for(lambda: log.batches_written == 2)
    log.close()
    assert logged(local_lake) == ["a", "b", "c"]
    assert len(local_lake.log_files("ridehail", KIND, "driver_churn")) == 2
    assert not list(folder.glob("*/*/*.arrow"))
    assert second.seq == first.seq + 1


def test_rows_the_log_schema_refuses_are_counted_as_dropped(tmp_path, local_lake):
    log = RequestLog(local_lake, Spool(tmp_path / "spool", 1 << 20), 1, 60)
    bad = rows("x")
    bad[0]["latency_ms"] = "slow"
    log.record(SCHEMA, bad)
    assert wait_for(lambda: log.state().dropped == {MODEL: 1})
    log.record(SCHEMA, rows("ok"))  # the thread goes on
    log.close()
    assert logged(local_lake) == ["ok"]


def test_a_spool_in_use_is_refused(tmp_path):
    spool = Spool(tmp_path / "spool", 1 << 20)
    try:
        with pytest.raises(SpoolError) as refused:
            Spool(tmp_path / "spool", 1 << 20)
        assert str(refused.value) == (
            f"request-log spool {tmp_path / 'spool'} is in use by another process "
            f"(pid {os.getpid()}): give each `mlplat serve` its own --spool-dir"
        )
    finally:
        spool.close()
    Spool(tmp_path / "spool", 1 << 20).close()  # released


def test_a_spool_bound_below_one_byte_is_refused(tmp_path):
    with pytest.raises(SpoolError, match="max_bytes must be at least 1, not 0"):
        Spool(tmp_path / "spool", 0)


def test_an_unreadable_spool_file_is_set_aside_and_the_rest_is_sent(tmp_path, local_lake, caplog):
    folder = tmp_path / "spool"
    spool = Spool(folder, 1 << 20)
    good = spool.put(
        *MODEL, pa.Table.from_pylist(rows("a"), schema=SCHEMA.arrow()), datetime.now(UTC)
    )
    spool.close()
    bad = good.path.with_name(f"{good.seq + 1:012d}{'f' * 8}.arrow")
    bad.write_bytes(b"not arrow")
    log = RequestLog(local_lake, Spool(folder, 1 << 20), 1000, 60)
    log.close()
    assert logged(local_lake) == ["a"]
    [message] = log.state().set_aside
    aside = folder / "unreadable" / f"ridehail.driver_churn.{bad.name}"
    assert message.startswith(f"{bad} did not read back (not an Arrow IPC batch of the request log")
    assert message.endswith(f"moved to {aside}")
    assert aside.read_bytes() == b"not arrow" and not bad.exists()
    assert message in caplog.text


def test_a_write_cut_short_leaves_no_batch(tmp_path, local_lake):
    folder = tmp_path / "spool"
    Spool(folder, 1 << 20).close()
    (folder / "ridehail" / "driver_churn").mkdir(parents=True)
    partial = folder / "ridehail" / "driver_churn" / ".tmp-0123"
    partial.write_bytes(b"ARROW1\0\0 half a batch")
    spool = Spool(folder, 1 << 20)
    spool.close()
    assert not partial.exists() and spool.pending() == []


def test_a_count_of_dropped_rows_that_is_not_one_is_refused(tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "dropped.json").write_text(json.dumps({"ridehail.driver_churn": -3}))
    with pytest.raises(SpoolError) as refused:
        Spool(folder, 1 << 20)
    assert str(refused.value) == (
        f"request-log spool {folder / 'dropped.json'}: not the service's count of dropped rows "
        "(ridehail.driver_churn: -3 is not a count of rows); move it away to start counting again"
    )
