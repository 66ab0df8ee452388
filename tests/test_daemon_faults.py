"""The real `dagster-daemon` killed (SIGKILL) in the middle of a sensor tick and started again:
the tick is resumed and every run key gets exactly one run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

pytestmark = [pytest.mark.slow]
BIN = Path(sys.executable).parent
KEYS = 40

CODE = f"""
import dagster as dg

@dg.op
def noop():
    pass

@dg.job
def promote():
    noop()

@dg.sensor(job=promote, minimum_interval_seconds=1,
           default_status=dg.DefaultSensorStatus.RUNNING)
def many_keys(context):
    # The same requests on every evaluation: the run keys alone keep runs from repeating.
    return [dg.RunRequest(run_key=f"promote:{{i}}") for i in range({KEYS})]

defs = dg.Definitions(jobs=[promote], sensors=[many_keys])
"""

INSTANCE = """
telemetry: {enabled: false}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config: {max_concurrent_runs: 0}   # runs stay queued: the test is about submission
"""


def _daemon(home: Path, workspace: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def _keys(instance: dg.DagsterInstance) -> Counter:
    runs = instance.get_runs(dg.RunsFilter(job_name="promote"))
    return Counter(r.tags.get("dagster/run_key") for r in runs)


def test_daemon_killed_mid_tick_launches_each_run_key_once(tmp_path, record_property):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    code = tmp_path / "sensor_code.py"
    code.write_text(textwrap.dedent(CODE))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file: {code}\n")
    log = tmp_path / "daemon.log"
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        daemon = _daemon(home, workspace, log)
        try:
            deadline = time.monotonic() + 300
            while not _keys(instance) and time.monotonic() < deadline:
                time.sleep(0.05)
            _stop(daemon, signal.SIGKILL)  # mid-tick: some of the tick's runs exist, not all
            killed_with = sum(_keys(instance).values())
            assert 0 < killed_with < KEYS, f"kill landed outside the tick ({killed_with} runs)"
            started = time.monotonic()
            daemon = _daemon(home, workspace, log)
            while sum(_keys(instance).values()) < KEYS and time.monotonic() - started < 300:
                time.sleep(0.2)
            recovered = time.monotonic() - started
            time.sleep(5)  # a few more ticks: nothing may be launched twice
        finally:
            _stop(daemon)
        keys = _keys(instance)
        assert set(keys) == {f"promote:{i}" for i in range(KEYS)}, log.read_text()[-3000:]
        assert max(keys.values()) == 1, {k: n for k, n in keys.items() if n > 1}
    record_property("runs_before_kill", killed_with)
    record_property("seconds_to_all_runs_after_restart", round(recovered, 1))
