"""The price catalog (per vCPU-hour, GiB-hour and GPU-hour) every step is billed from."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from pydantic import BaseModel, Field

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
