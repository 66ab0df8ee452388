"""Measures one step (wall, CPU, peak memory) and prices it from the price catalog."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil
import yaml
from pydantic import BaseModel, Field

from platform_assets.tenancy.specs import ComputeResources

DEFAULT_CATALOG = Path(__file__).with_name("prices.yaml")


class PriceCatalog(BaseModel, extra="forbid"):
    currency: str = "USD"
    vcpu_hour: float = Field(ge=0)
    gib_hour: float = Field(ge=0)
    gpu_hour: float = Field(ge=0)

    @classmethod
    def load(cls, path: Path | str = DEFAULT_CATALOG) -> PriceCatalog:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


class PricingResource(dg.ConfigurableResource):
    catalog_path: str = str(DEFAULT_CATALOG)

    def catalog(self) -> PriceCatalog:
        return PriceCatalog.load(self.catalog_path)


@dataclass
class Usage:
    tenant: str
    requested: ComputeResources
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_gib: float = 0.0
    errors: list[str] = field(default_factory=list)

    def cost(self, prices: PriceCatalog) -> float:
        hours = self.wall_seconds / 3600
        used_cpu = self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0
        vcpu = max(self.requested.cpu, used_cpu)
        gib = max(self.requested.memory_gib, self.peak_memory_gib)
        return hours * (
            vcpu * prices.vcpu_hour + gib * prices.gib_hour + self.requested.gpu * prices.gpu_hour
        )

    def metadata(self, prices: PriceCatalog) -> dict[str, dg.RawMetadataValue]:
        md: dict[str, dg.RawMetadataValue] = {
            "cost/tenant": self.tenant,
            "cost/wall_seconds": round(self.wall_seconds, 3),
            "cost/cpu_seconds": round(self.cpu_seconds, 3),
            "cost/peak_memory_gib": round(self.peak_memory_gib, 4),
            "cost/requested_cpu": self.requested.cpu,
            "cost/requested_memory_gib": self.requested.memory_gib,
            "cost/requested_gpu": self.requested.gpu,
            "cost/usd": round(self.cost(prices), 8),
        }
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


@contextmanager
def meter(tenant: str, requested: ComputeResources) -> Iterator[Usage]:
    """Measure the enclosed block. Measurement problems are recorded, never raised."""
    usage = Usage(tenant=tenant, requested=requested)
    sampler = _PeakSampler()
    sampler.start()
    start_wall, start_cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    try:
        yield usage
    finally:
        end_cpu = resource.getrusage(resource.RUSAGE_SELF)
        usage.wall_seconds = time.perf_counter() - start_wall
        usage.cpu_seconds = (end_cpu.ru_utime - start_cpu.ru_utime) + (
            end_cpu.ru_stime - start_cpu.ru_stime
        )
        try:
            usage.peak_memory_gib = sampler.stop() / 2**30
        except psutil.Error as exc:
            usage.errors.append(f"peak memory: {exc}")
