"""A team's training code run in a bubblewrap sandbox on this machine, talking to the step
through Dagster Pipes (docs/trainers.md, "How the sandbox works").

The sandbox has its own user, PID, IPC, UTS, cgroup and network namespaces (no network: only
the loopback of a new namespace), runs as uid/gid 65534 with no capabilities, and sees only:
/usr (and the merged-usr symlinks), the platform Python's prefix, the tenant's environment and
source, the runner, the training split and the Pipes context, all read-only; a fresh /proc and
/dev, and a /tmp tmpfs of `tmp_bytes`. No /etc, no home, no platform data, no other tenant. It
gets no environment but Pipes' two bootstrap variables: bwrap itself is started with an empty
environment, since the sandbox's PID 1 keeps bwrap's at /proc/1/environ even with --clearenv.

Nothing in the sandbox can write a host file. The model and the Pipes messages leave through
two pipes (fds 3 and 4) that the platform reads with byte caps: the model into a platform-
private folder, cut off (and the training failed) past `artifact_bytes`; the messages parsed as
they arrive, the team's logs marked as the team's and its reported metadata kept, bounded, in
`TrainerOutput.reported` (never a materialization or a check result).

Limits: wall time (the whole sandbox is killed), address space (RLIMIT_AS at the step's memory),
CPU time (RLIMIT_CPU at cpu x timeout), CPU affinity (ceil(cpu) cores), /tmp size.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.models.trainers.environment import (
    base_python,
    trainer_environment,
)
from platform_assets.models.trainers.job import TrainerFailed, TrainerJob, TrainerOutput
from platform_assets.models.trainers.messages import TeamMessages, mark, new_reported
from platform_assets.tenancy.catalog import code_source_root

if TYPE_CHECKING:  # pandas and pyarrow load in the step, not with the code location
    import pandas as pd
    import pyarrow as pa

BWRAP = "/usr/bin/bwrap"
INSTALL_HINT = (
    "the platform runs team code only in a bubblewrap sandbox: install it "
    "(`apt-get install bubblewrap`, or `make install` as root) on a kernel that allows "
    "unprivileged user namespaces"
)
RUNNER = Path(__file__).with_name("runner.py")
TRANSFER = Path(__file__).with_name("transfer.py")  # the runner imports it from its folder
TRANSFER_PATH = "/runner/transfer.py"
# Where things are inside the sandbox.
ENV_DIR, RUNNER_PATH, INPUT_PATH = "/env", "/runner/runner.py", "/input.parquet"
CODE_DIR = Path("/code")
ARTIFACT_FD, MESSAGES_FD = 3, 4
NOBODY = "65534"
ERROR_PREFIX = "mlplat-trainer-error: "  # runner.ERROR_PREFIX (the runner imports no platform)
# Bounds on what the team's code can make the platform keep or log.
OUTPUT_TAIL_BYTES = 64 * 1024
ERROR_TAIL_CHARS = 6000
MESSAGE_LINE_BYTES = 64 * 1024
# Signs in the output that the team's code hit the address-space cap.
OUT_OF_MEMORY = ("MemoryError", "std::bad_alloc", "Unable to allocate", "Cannot allocate memory")


def run_in_sandbox(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    job: TrainerJob,
    train: pd.DataFrame | pa.Table,
) -> TrainerOutput:
    """Train `job`'s model on `train` (the training split only) in a sandbox.

    The returned artifact is in a new platform-private folder the caller removes once it has
    read the file (`shutil.rmtree(output.artifact.parent)`). A step that calls this opens a
    Pipes session, so Dagster requires it to return (or yield) a `MaterializeResult`.
    """
    check_sandbox()
    env = trainer_environment(job)
    private = Path(tempfile.mkdtemp(prefix="mlplat-trainer-"))  # 0700
    out_dir = Path(tempfile.mkdtemp(prefix="mlplat-trainer-model-"))
    try:
        _write_parquet(train, private / "train.parquet")
        extras = {
            "entrypoint": job.entrypoint,
            "sys_path": [str(CODE_DIR / code_source_root(job.code_dir).relative_to(job.code_dir))],
            "flavor": job.flavor,
            "label": job.label,
            "features": list(job.features),
            "params": job.params,
            "input": INPUT_PATH,
            "output": f"/dev/fd/{ARTIFACT_FD}",
        }
        reader = _TeamMessageReader(context, job)
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesFileContextInjector(str(private / "context.json")),
            message_reader=reader,
            extras=extras,
        ) as session:
            argv = _bwrap_argv(job, env, private, session.get_bootstrap_env_vars())
            run = _run(job, argv, out_dir / job.artifact_file, reader)
        if run.output:
            context.log.info(
                f"{mark(job.tenant)}output (last {OUTPUT_TAIL_BYTES // 1024} KiB):\n{run.output}"
            )
        _check(job, run)
        return TrainerOutput(
            artifact=out_dir / job.artifact_file,
            reported=reader.reported,
            wall_s=run.wall_s,
            cpu_s=run.cpu_s,
            max_rss_bytes=run.max_rss_bytes,
        )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(private, ignore_errors=True)


@cache
def check_sandbox() -> None:
    """Raise TrainerFailed unless bwrap is installed and can create the sandbox's namespaces
    (cached per process: the answer does not change while the platform runs)."""
    if not os.access(BWRAP, os.X_OK):
        raise TrainerFailed(f"{BWRAP} not found: {INSTALL_HINT}")
    probe = subprocess.run(
        [BWRAP, *_isolation(), *_system_binds(), "/usr/bin/true"],
        env={},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        raise TrainerFailed(
            f"bubblewrap cannot create the sandbox here ({probe.stderr.strip()}): {INSTALL_HINT}"
        )


def _isolation() -> list[str]:
    return [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--uid",
        NOBODY,
        "--gid",
        NOBODY,
        "--cap-drop",
        "ALL",
    ]


def _system_binds() -> list[str]:
    """/usr read-only, and the top-level links into it of a merged-usr system (or the folders
    themselves where they are not links)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    return args


def _bwrap_argv(job: TrainerJob, env: Path, private: Path, pipes_env: dict[str, str]) -> list[str]:
    prefix = Path(base_python()).parents[1]  # the platform Python's prefix (sys.base_prefix)
    argv = [BWRAP, *_isolation(), *_system_binds()]
    argv += ["--ro-bind", str(prefix), str(prefix)]
    argv += ["--ro-bind", str(env), ENV_DIR, "--ro-bind", str(job.code_dir), str(CODE_DIR)]
    argv += ["--ro-bind", str(RUNNER), RUNNER_PATH]
    argv += ["--ro-bind", str(TRANSFER), TRANSFER_PATH]
    argv += ["--ro-bind", str(private / "train.parquet"), INPUT_PATH]
    # The Pipes context file, at the path its bootstrap parameter names.
    context_file = private / "context.json"
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(job.tmp_bytes), "--tmpfs", "/tmp"]
    argv += ["--ro-bind", str(context_file), str(context_file), "--chdir", "/tmp"]
    for key, value in pipes_env.items():
        argv += ["--setenv", key, value]
    # -I: no PYTHON* variables, no user site, not the runner's folder on sys.path;
    # -B: the team's code is read-only, so no bytecode is written.
    return [*argv, f"{ENV_DIR}/bin/python", "-I", "-B", RUNNER_PATH]


class _Run:
    def __init__(self) -> None:
        self.returncode = 0
        self.timed_out = False
        self.artifact_over = False
        self.output = ""
        self.wall_s = self.cpu_s = 0.0
        self.max_rss_bytes = 0


def _run(job: TrainerJob, argv: list[str], artifact: Path, reader: _TeamMessageReader) -> _Run:
    """Start the sandbox with its limits, stream out its model, output and messages, and wait
    for it (or kill it at the time limit)."""
    run = _Run()
    artifact_r, artifact_w = os.pipe()
    messages_w = reader.take_write_end()
    # Above the standard fds, so dup2 to 3 and 4 in the child never overwrites the other one.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (artifact_w, messages_w)]
    os.close(artifact_w)
    os.close(messages_w)
    memory = int(job.memory_gib * 1024**3)
    cpu_s = math.ceil(job.cpu * job.timeout_s) + 1
    cores = _cores(job.cpu)

    def limit() -> None:  # in the child, before exec: async-signal-safe calls only
        os.dup2(high[0], ARTIFACT_FD)
        os.dup2(high[1], MESSAGES_FD)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.sched_setaffinity(0, cores)

    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(ARTIFACT_FD, MESSAGES_FD),
            preexec_fn=limit,  # rlimits are set before bwrap starts
            process_group=0,
        )
    except BaseException:
        os.close(artifact_r)
        raise
    finally:
        for fd in high:
            os.close(fd)
    assert proc.stdout is not None
    tail = bytearray()
    threads = [
        threading.Thread(target=_read_tail, args=(proc.stdout, tail), daemon=True),
        threading.Thread(
            target=_read_artifact, args=(artifact_r, artifact, job.artifact_bytes, run), daemon=True
        ),
    ]
    for thread in threads:
        thread.start()

    def kill() -> None:
        run.timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(job.timeout_s, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = run.returncode = os.waitstatus_to_exitcode(status)
    run.wall_s = time.monotonic() - started
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.max_rss_bytes = usage.ru_maxrss * 1024
    for thread in threads:
        thread.join(timeout=30)
    proc.stdout.close()
    run.output = tail.decode("utf-8", "replace")
    return run


def _cores(cpu: float) -> set[int]:
    """ceil(cpu) of this process's cores, starting at one picked by pid so concurrent
    trainers spread out."""
    allowed = sorted(os.sched_getaffinity(0))
    count = min(len(allowed), max(1, math.ceil(cpu)))
    start = os.getpid() % len(allowed)
    return {allowed[(start + i) % len(allowed)] for i in range(count)}


def _read_tail(stream, tail: bytearray) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        tail += chunk
        del tail[:-OUTPUT_TAIL_BYTES]


def _read_artifact(fd: int, path: Path, cap: int, run: _Run) -> None:
    """Copy the model from the pipe into `path`, stopping (and closing the pipe, so the writer
    fails) once it passes `cap` bytes."""
    written = 0
    with open(fd, "rb", buffering=0, closefd=True) as pipe, open(path, "wb") as out:
        for chunk in iter(lambda: pipe.read(1 << 20), b""):
            if written + len(chunk) > cap:
                run.artifact_over = True
                return
            out.write(chunk)
            written += len(chunk)


def _check(job: TrainerJob, run: _Run) -> None:
    where = job.where
    output = run.output[-ERROR_TAIL_CHARS:]
    if run.timed_out:
        raise TrainerFailed(
            f"{where} exceeded its time limit of {job.timeout_s:g} s (timeout_s in limits.yaml) "
            f"and was killed. Its last output:\n{output}"
        )
    if run.artifact_over:
        raise TrainerFailed(
            f"{where}: the model file is over the size cap of {job.artifact_bytes / 2**20:g} MiB "
            "(artifact_mib in limits.yaml); it was not kept"
        )
    if run.returncode == 0:
        return
    refused = [ln for ln in run.output.splitlines() if ln.startswith(ERROR_PREFIX)]
    if refused:
        reason = refused[-1].removeprefix(ERROR_PREFIX)
    elif any(sign in run.output for sign in OUT_OF_MEMORY):
        reason = (
            f"it ran out of memory: the limit is {job.memory_gib:g} GiB of address space "
            "(the memory granted to the model step)"
        )
    elif run.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        reason = f"it used more CPU time than its limit ({job.cpu:g} CPU x {job.timeout_s:g} s)"
    else:
        reason = f"it exited with status {run.returncode}"
    raise TrainerFailed(f"{where} failed: {reason}. Its last output:\n{output}")


def _write_parquet(train: pd.DataFrame | pa.Table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = (
        train if isinstance(train, pa.Table) else pa.Table.from_pandas(train, preserve_index=False)
    )
    pq.write_table(table, path)


class _TeamMessageReader(dg.PipesMessageReader):
    """Pipes messages from the sandbox over a pipe (fd 4 inside), read line by line with a cap
    per line, each handed to `messages.TeamMessages` rather than to Dagster's handler directly."""

    def __init__(self, context: Any, job: TrainerJob) -> None:
        self._context, self._job = context, job
        self._write_end: int | None = None
        self.reported: dict[str, Any] = new_reported()

    def take_write_end(self) -> int:
        fd, self._write_end = self._write_end, None
        assert fd is not None, "read_messages is not open"
        return fd

    @contextmanager
    def read_messages(self, handler: Any) -> Iterator[dict[str, Any]]:
        read_end, self._write_end = os.pipe()
        team = TeamMessages(handler, self._context, self._job.tenant, self.reported)
        thread = threading.Thread(target=self._read, args=(read_end, team), daemon=True)
        thread.start()
        try:
            yield {"path": f"/dev/fd/{MESSAGES_FD}"}
        finally:
            if self._write_end is not None:  # never launched
                os.close(self._write_end)
                self._write_end = None
            thread.join(timeout=30)

    def _read(self, fd: int, team: TeamMessages) -> None:
        with open(fd, "rb", closefd=True) as pipe:
            while line := pipe.readline(MESSAGE_LINE_BYTES + 1):
                if not line.endswith(b"\n") and len(line) > MESSAGE_LINE_BYTES:
                    team.drop(f"a message over {MESSAGE_LINE_BYTES // 1024} KiB")
                    while (rest := pipe.readline(MESSAGE_LINE_BYTES)) and not rest.endswith(b"\n"):
                        pass
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    team.drop("a line that is not a Pipes message")
                    continue
                team.handle_message(message)

    @property
    def expected_writer_count(self) -> int:
        return 1  # one runner (and Dagster's default, without its preview warning)

    def no_messages_debug_text(self) -> str:
        return f"Attempted to read messages from the trainer sandbox's fd {MESSAGES_FD}."
