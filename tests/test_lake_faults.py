"""Fault test: the S3 server goes down during a lake write, and the previous snapshot survives.

The lake speaks to moto's S3 server through a relay process (tests/tcp_relay.py); killing the
relay with SIGKILL is, for the client, the server dying mid-conversation (connections reset, the
port refused) while moto behind it keeps the bucket, so once the relay is back on the same port
the test sees exactly what the failed write left behind. Figures (time to fail, time to read
again after the restart) are logged at INFO:
`pytest tests/test_lake_faults.py --log-cli-level=INFO`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pytest

from platform_assets.resources.lake import LakeResource

log = logging.getLogger(__name__)
GOOD = pa.table({"id": [1, 2, 3], "x": [0.1, 0.2, 0.3]})
NEW = pa.table({"id": [4, 5], "x": [0.4, 0.5]})


class Relay:
    """The S3 endpoint the lake sees: a process that can be killed and started again."""

    def __init__(self, target: str) -> None:
        self.target_port = int(target.rsplit(":", 1)[1])
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tcp_relay", str(self.target_port), str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def relay(s3_endpoint: str) -> Iterator[Relay]:
    relay = Relay(s3_endpoint)
    relay.start()
    try:
        yield relay
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.kill()


def _recover(relay: Relay, lake: LakeResource) -> float:
    """Start the relay again; seconds until the lake answers."""
    started = time.perf_counter()
    relay.start()
    lake.current("payments", "sources", "tx")
    return time.perf_counter() - started


def test_s3_down_during_a_lake_write_keeps_the_previous_snapshot(relay, s3_bucket, s3_endpoint):
    lake = LakeResource(root=f"s3://{s3_bucket}/lake", endpoint_url=relay.endpoint)
    good = lake.write("payments", "sources", "tx", GOOD)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)  # straight to moto, past the relay

    def objects() -> set[str]:
        listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/")
        return {o["Key"] for o in listed.get("Contents", [])}

    before = objects()

    # 1. Down before the write: the snapshot cannot be put, so the pointer is never touched.
    relay.kill()
    started = time.perf_counter()
    with pytest.raises(OSError, match=r"writing snapshot payments/sources/tx@\w+ to .* failed"):
        lake.write("payments", "sources", "tx", NEW)
    fail_down = time.perf_counter() - started
    recover_down = _recover(relay, lake)
    assert lake.current("payments", "sources", "tx") == good
    assert lake.read("payments", "sources", "tx").equals(GOOD)
    assert objects() == before

    # 2. Down between the snapshot and the commit: the new snapshot is there, never current.
    staged = lake.write("payments", "sources", "tx", NEW, commit=False)
    relay.kill()
    started = time.perf_counter()
    with pytest.raises(OSError, match="committing snapshot payments/sources/tx@.* unchanged"):
        lake.commit(staged)
    fail_commit = time.perf_counter() - started
    recover_commit = _recover(relay, lake)
    assert lake.current("payments", "sources", "tx") == good
    assert lake.read("payments", "sources", "tx").equals(GOOD)

    # 3. Down in the middle of a multipart upload of a large snapshot.
    rng = np.random.default_rng(7)
    big = pa.table({"id": np.arange(4_000_000), "x": rng.random(4_000_000)})
    errors: list[BaseException] = []

    def write_big() -> None:
        try:
            lake.write("payments", "sources", "tx", big)
        except BaseException as exc:  # the test asserts on it below
            errors.append(exc)

    writer = threading.Thread(target=write_big)
    writer.start()
    deadline = time.monotonic() + 60
    while not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
        assert writer.is_alive() and time.monotonic() < deadline, "no multipart upload began"
        time.sleep(0.01)
    relay.kill()
    started = time.perf_counter()
    writer.join(timeout=120)
    fail_upload = time.perf_counter() - started
    assert not writer.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], OSError), errors
    recover_upload = _recover(relay, lake)
    assert lake.current("payments", "sources", "tx") == good
    assert lake.read("payments", "sources", "tx").equals(GOOD)
    # Only the staged snapshot of step 2 was added: no half object under a version's name.
    assert objects() == before | {staged.uri.removeprefix(f"s3://{s3_bucket}/")}
    orphaned = len(s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []))

    log.info(
        "S3 down during a lake write: fail after %.2f s (before the write), %.2f s (at the "
        "commit), %.2f s (mid-upload of %.0f MB); reads again %.2f / %.2f / %.2f s after the "
        "restart; previous snapshot current and intact in all 3; %d incomplete multipart "
        "upload(s) left for the bucket's lifecycle rule",
        fail_down,
        fail_commit,
        fail_upload,
        big.nbytes / 1e6,
        recover_down,
        recover_commit,
        recover_upload,
        orphaned,
    )
