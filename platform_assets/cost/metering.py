"""Measures one step (wall, CPU, peak memory) and prices it from the price catalog.

Locally the numbers come from the OS (getrusage, RSS sampling); inside a Kubernetes pod they come
from the container's cgroup, because one pod runs one step and the cgroup also sees children.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil

from platform_assets.cost.budget import run_start_status
from platform_assets.cost.ledger import record_start
from platform_assets.resources.pricing import PriceCatalog
from platform_assets.tenancy.limits import grant
from platform_assets.tenancy.specs import ComputeResources

CGROUP_ROOT = Path("/sys/fs/cgroup")


def bill(
    requested: ComputeResources,
    wall_seconds: float,
    cpu_seconds: float,
    peak_memory_gib: float,
    prices: PriceCatalog,
) -> float:
    """USD for one step: wall hours x (max(requested, used) per resource x its hourly price).

    Used vCPU is the average over the step (cpu_seconds / wall_seconds); used memory is the peak.
    GPUs are billed as requested: a GPU is reserved whole for the step.
    """
    hours = wall_seconds / 3600
    used_cpu = cpu_seconds / wall_seconds if wall_seconds else 0.0
    vcpu = max(requested.cpu, used_cpu)
    gib = max(requested.memory_gib, peak_memory_gib)
    return hours * (
        vcpu * prices.vcpu_hour + gib * prices.gib_hour + requested.gpu * prices.gpu_hour
    )


@dataclass
class Usage:
    tenant: str
    requested: ComputeResources
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_gib: float = 0.0
    measured_by: str = "os"
    errors: list[str] = field(default_factory=list)
    # Other pods the step held while it ran (a team trainer's pod on Kubernetes): what each
    # was granted and for how long. Billed as requested, like a GPU: reserved whole.
    pods: list[tuple[ComputeResources, float]] = field(default_factory=list)

    def reserve(self, granted: ComputeResources, wall_seconds: float) -> None:
        self.pods.append((granted, wall_seconds))

    def cost(self, prices: PriceCatalog) -> float:
        own = bill(
            self.requested, self.wall_seconds, self.cpu_seconds, self.peak_memory_gib, prices
        )
        return own + sum(bill(pod, wall, 0.0, 0.0, prices) for pod, wall in self.pods)

    def metadata(self, prices: PriceCatalog) -> dict[str, dg.RawMetadataValue]:
        md: dict[str, dg.RawMetadataValue] = {
            "cost/tenant": self.tenant,
            "cost/wall_seconds": round(self.wall_seconds, 3),
            "cost/cpu_seconds": round(self.cpu_seconds, 3),
            "cost/peak_memory_gib": round(self.peak_memory_gib, 4),
            "cost/requested_cpu": self.requested.cpu,
            "cost/requested_memory_gib": self.requested.memory_gib,
            "cost/requested_gpu": self.requested.gpu,
            "cost/measured_by": self.measured_by,
            "cost/usd": round(self.cost(prices), 8),
        }
        if self.pods:
            md["cost/other_pods"] = dg.MetadataValue.json(
                [
                    {"cpu": p.cpu, "memory_gib": p.memory_gib, "wall_seconds": round(w, 3)}
                    for p, w in self.pods
                ]
            )
        if self.errors:
            md["cost/measurement_errors"] = "; ".join(self.errors)
        return md


class _PeakSampler(threading.Thread):
    """Samples this process's RSS: ru_maxrss is a lifetime peak, not the step's."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._proc.memory_info().rss)


class Cgroup:
    """The container's own cgroup: v2 (`cpu.stat`, `memory.peak`) or v1 (cpuacct, memory)."""

    def __init__(self, root: Path = CGROUP_ROOT):
        self.root = root
        self.version = 2 if (root / "cgroup.controllers").exists() else 1

    def cpu_seconds(self) -> float:
        if self.version == 2:
            for line in (self.root / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) / 1e6
            raise ValueError(f"{self.root / 'cpu.stat'} has no usage_usec")
        return int((self.root / "cpuacct" / "cpuacct.usage").read_text()) / 1e9

    def peak_bytes(self) -> int:
        if self.version == 2:
            return int((self.root / "memory.peak").read_text())
        return int((self.root / "memory" / "memory.max_usage_in_bytes").read_text())


def in_kubernetes() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _process_cpu() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _step_context() -> dg.OpExecutionContext | None:
    try:
        return dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None  # measured outside a Dagster step (a unit test, a notebook)


def _refuse_over_budget(tenant: str) -> None:
    """Inside a run, refuse to start the step when the tenant was over budget at run start."""
    context = _step_context()
    if context is None:
        return

    status = run_start_status(context.instance, tenant, context.run_id)
    if status is not None and status.blocked:
        raise dg.Failure(description=status.message, allow_retries=False)


def _billed_key(context: dg.OpExecutionContext) -> dg.AssetKey | None:
    """The asset a step's bill is recorded on: one step, one bill (platform steps produce one
    asset)."""
    return next(iter(context.selected_asset_keys), None)


def _record_start(context: dg.OpExecutionContext, tenant: str, granted: ComputeResources) -> None:
    """Leave the ledger's started row: what bills this step if its process dies unbilled."""
    key = _billed_key(context)
    if key is None:
        return
    step_key = context.get_step_execution_context().step.key
    record_start(
        context.instance,
        context.run_id,
        step_key,
        tenant,
        key.to_user_string(),
        granted,
        time.time(),
    )


def _bill_failure(usage: Usage, prices: PriceCatalog, error: BaseException) -> None:
    """A failed step is billed too: an observation of the step's asset carrying its cost and the
    failure, recorded by the step itself (the ledger counts it like a materialization)."""
    context = _step_context()
    if context is None:
        return  # not in a step: nothing was billed, nothing to record
    metadata = {**usage.metadata(prices), "cost/failed": f"{type(error).__name__}: {error}"[:500]}
    key = _billed_key(context)
    if key is not None:
        context.log_event(dg.AssetObservation(asset_key=key, metadata=metadata))


@contextmanager
def meter(
    tenant: str,
    requested: ComputeResources,
    prices: PriceCatalog | None = None,
    cgroup_root: Path = CGROUP_ROOT,
) -> Iterator[Usage]:
    """Measure the enclosed block. Measurement problems are recorded on the usage, never raised.

    In a step, the ledger first gets the step's started row (`ledger.record_start`), so a step
    whose process is killed before it bills itself is billed by `cost/reconcile.py`.

    Before the block runs, a tenant that was over its monthly budget when the run started (and
    has no override) is refused with `dg.Failure` naming the budget. The step is billed on what
    the platform grants (`tenancy.limits.grant`, from which the `k8s` deployment renders the
    step's pod too: the bill and the pod agree); a request it capped is logged in the step. When
    the block raises, the usage up to then is billed (`prices`, default the platform catalog)
    with the failure.
    """
    _refuse_over_budget(tenant)
    granted, note = grant(tenant, requested)
    context = _step_context()
    if note and context is not None:
        context.log.warning(note)
    if context is not None:
        _record_start(context, tenant, granted)
    usage = Usage(tenant=tenant, requested=granted)
    cgroup, cgroup_cpu = None, 0.0
    if in_kubernetes():
        try:
            cgroup = Cgroup(cgroup_root)
            cgroup_cpu = cgroup.cpu_seconds()
            usage.measured_by = f"cgroup v{cgroup.version}"
        except (OSError, ValueError) as exc:
            usage.errors.append(f"cgroup cpu unreadable, measured by the OS instead: {exc}")
            cgroup = None
    sampler = _PeakSampler()
    sampler.start()
    start_wall, start_cpu = time.perf_counter(), _process_cpu()
    error: BaseException | None = None
    try:
        yield usage
    except BaseException as exc:
        error = exc
        raise
    finally:
        usage.wall_seconds = time.perf_counter() - start_wall
        usage.cpu_seconds = _process_cpu() - start_cpu
        try:
            usage.peak_memory_gib = sampler.stop() / 2**30
        except psutil.Error as exc:
            usage.errors.append(f"peak memory: {exc}")
        if cgroup is not None:
            try:
                usage.cpu_seconds = cgroup.cpu_seconds() - cgroup_cpu
            except (OSError, ValueError) as exc:
                usage.errors.append(f"cgroup cpu: {exc}; process CPU recorded instead")
            try:
                # One step per pod: the container's peak is the step's peak.
                usage.peak_memory_gib = max(usage.peak_memory_gib, cgroup.peak_bytes() / 2**30)
            except (OSError, ValueError) as exc:
                usage.errors.append(f"cgroup memory peak: {exc}; sampled RSS recorded instead")
        if error is not None:
            _bill_failure(usage, prices or PriceCatalog.load(), error)
