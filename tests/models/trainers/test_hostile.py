"""Hostile trainers: each tries to reach something outside its sandbox and to smuggle what it
found out through every channel it has (its log, its reported data, its output and the model
file itself, an `onnx` flavor's bytes, which the sandbox passes on unchecked). Each attempt
must be refused and nothing it was after may reach what the platform keeps."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.materialize

SECRET = "S3CRET-7f1c9e"

# The trainer runs `attempt(params)` and reports the outcome through every channel.
HOSTILE = """
import json, os, socket
from dagster_pipes import PipesContext

{attempt}

def train(df, *, label, features, params):
    outcomes = []
    for target in params["targets"]:
        try:
            outcomes.append(f"allowed {{target}}: {{attempt(target)}}")
        except Exception as exc:
            outcomes.append(f"refused {{target}}: {{type(exc).__name__}}")
    outcome = json.dumps(outcomes)
    pipes = PipesContext.get()
    pipes.log.info("outcome " + outcome)
    pipes.report_custom_message(outcome)
    pipes.report_asset_materialization(metadata={{"outcome": outcome}})
    print("outcome " + outcome)
    return outcome.encode()
"""


def _hostile(trainer, attempt: str, targets: list):
    run = trainer(
        HOSTILE.format(attempt=textwrap.dedent(attempt)),
        flavor="onnx",
        params={"targets": targets},
    )
    assert run.error is None, run.error
    outcomes = eval(run.output.artifact.read_text())  # the list the trainer wrote
    return run, outcomes


def test_cannot_read_another_tenants_lake(trainer, trainer_data: Path) -> None:
    other = trainer_data / "lake" / "other_tenant" / "features.parquet"
    other.parent.mkdir(parents=True)
    other.write_text(SECRET)
    run, outcomes = _hostile(
        trainer,
        """
        def attempt(target):
            if os.path.isdir(target):
                return repr(os.listdir(target))
            return open(target).read()
        """,
        [str(other), str(other.parent), str(trainer_data), "/work", "/etc", "/root/.cache", "/"],
    )
    assert all(o.startswith("refused ") for o in outcomes[:-1]), outcomes
    # The root holds only what the sandbox binds (a home folder only as the path to the
    # platform Python's prefix, where that is under it).
    top = set(eval(outcomes[-1].removeprefix("allowed /: ")))
    binds = {"usr", "bin", "lib", "lib64", "sbin", "env", "code", "runner", "input.parquet"}
    assert top <= binds | {"proc", "dev", "tmp", Path(sys.base_prefix).parts[1]}, top
    assert SECRET not in run.everything


def test_cannot_read_the_platforms_environment(trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_TEST_SECRET", SECRET)
    run, outcomes = _hostile(
        trainer,
        """
        def attempt(target):
            if target == "environ":
                return json.dumps(dict(os.environ))
            if target == "/proc/1/environ":
                return repr(open(target, "rb").read())
            found = {}
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    found[pid] = open(f"/proc/{pid}/environ", "rb").read().decode()
            return json.dumps(found)
        """,
        ["environ", "/proc/1/environ", "/proc/*/environ"],
    )
    environ = json.loads(outcomes[0].removeprefix("allowed environ: "))
    # Pipes' two variables, and what bwrap (PWD) and Python (LC_CTYPE) set themselves.
    assert environ.keys() <= {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "PWD", "LC_CTYPE"}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= environ.keys()
    # The sandbox's PID 1 (bwrap) has an empty environment.
    assert outcomes[1] == "allowed /proc/1/environ: b''"
    # Only the sandbox's own processes are visible: bwrap and the runner.
    assert len(json.loads(outcomes[2].removeprefix("allowed /proc/*/environ: "))) == 2
    assert SECRET not in run.everything


def test_cannot_reach_the_network(trainer) -> None:
    # A server on the host's loopback that hands out the secret to whoever connects.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(SECRET.encode())
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as probe:  # reachable from the host
            assert probe.recv(100) == SECRET.encode()
        run, outcomes = _hostile(
            trainer,
            """
            def attempt(target):
                host, port = target
                with socket.create_connection((host, port), timeout=3) as conn:
                    return conn.recv(100).decode()
            """,
            [["127.0.0.1", port], ["127.0.0.1", 5432], ["pypi.org", 443]],
        )
    finally:
        server.close()
    assert all(o.startswith("refused ") for o in outcomes), outcomes
    assert SECRET not in run.everything


def test_cannot_write_outside_its_scratch(trainer, trainer_home: Path, trainer_data: Path) -> None:
    host_tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    targets = [
        str(trainer_home / "code" / "src" / "ridehail_models" / "evil.py"),
        "/code/src/ridehail_models/evil.py",
        "/env/evil.pth",
        "/runner/runner.py",
        "/usr/evil",
        str(trainer_data / "lake" / "evil"),
        str(trainer_home / "evil"),
        "/input.parquet",
    ]
    run, outcomes = _hostile(
        trainer,
        """
        def attempt(target):
            with open(target, "w") as f:
                f.write("pwned")
            return "written"
        """,
        targets,
    )
    assert all(o.startswith("refused ") for o in outcomes), outcomes
    assert not (trainer_home / "code" / "src" / "ridehail_models" / "evil.py").exists()
    assert not (trainer_data / "lake" / "evil").exists()
    assert not (trainer_home / "evil").exists()
    assert not any(p.name == "evil" for p in host_tmp.iterdir())
    # /tmp in the sandbox is its own (a tmpfs), not the host's.
    run, outcomes = _hostile(
        trainer,
        """
        def attempt(target):
            with open(target, "w") as f:
                f.write("scratch")
            return repr(os.listdir("/tmp"))
        """,
        ["/tmp/evil"],
    )
    assert outcomes[0].startswith("allowed /tmp/evil: ")
    assert not (host_tmp / "evil").exists()
