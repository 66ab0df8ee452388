"""A job whose one metered step burns CPU until it is killed: the killed-step billing test runs it
with `dagster job execute` (the multiprocess executor, a real step process) and SIGKILLs it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.tenancy.specs import ComputeResources

PID_FILE_ENV = "KILLABLE_PID_FILE"
GRANTED = ComputeResources(cpu=2, memory_gib=4)


@dg.asset(key=["ridehail", "sources", "killable"])
def killable() -> None:
    with meter("ridehail", GRANTED):
        pid_file = Path(os.environ[PID_FILE_ENV])
        staged = pid_file.with_suffix(".tmp")
        staged.write_text(str(os.getpid()))
        staged.rename(pid_file)  # whole or absent: the test never reads half a pid
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # busy, as a step the OOM killer stops would be
            sum(i * i for i in range(10_000))


defs = dg.Definitions(
    assets=[killable], jobs=[dg.define_asset_job("killable_job", selection=[killable])]
)
