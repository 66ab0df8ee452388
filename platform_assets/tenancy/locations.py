"""Code locations: one for the platform, one per tenant (loaded from
`platform_assets.locations`, attribute = location name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from platform_assets.tenancy.isolation import PLATFORM


@dataclass(frozen=True)
class CodeLocation:
    name: str
    tenants: tuple[str, ...]

    @property
    def module(self) -> str:
        return "platform_assets.locations"

    @property
    def attribute(self) -> str:
        return self.name


def code_locations(root: Path | None = None) -> list[CodeLocation]:
    """The platform location first, then one per tenant."""
    from platform_assets.tenancy.catalog import load_all

    return [CodeLocation(PLATFORM, ()), *(CodeLocation(n, (n,)) for n in load_all(root))]
