"""Who may do what to a tenant's model: roles from the tenant YAML, platform admins, four eyes.

Refusals raise `Refused` naming the rule; the workflow records each as a refused attempt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from platform_assets.tenancy.catalog import PlatformConfigError, TenantCatalog

ADMINS_FILE = Path(__file__).with_name("platform_admins.yaml")

# Rule ids, as they appear in refusal messages and audit records.
ROLE_REQUIRED = "role-required"
FOUR_EYES = "four-eyes"
TENANT_ISOLATION = "tenant-isolation"


class Refused(PermissionError):
    """An action refused by a governance rule; `rule` is one of the ids above or a policy."""

    evidence: dict = {}  # what the refusal was judged on, for the audit record

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(f"refused by rule {rule}: {message}")


class PlatformAdmins(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admins: list[str] = Field(min_length=1)

    @field_validator("admins")
    @classmethod
    def _identities(cls, admins: list[str]) -> list[str]:
        for i, who in enumerate(admins):
            if not who or who != who.strip() or " " in who:
                raise ValueError(f"admins[{i}] {who!r} is not an identity")
        return admins


def platform_admins(path: Path | None = None) -> list[str]:
    path = path or Path(os.environ.get("MLPLAT_PLATFORM_ADMINS", ADMINS_FILE))
    try:
        return PlatformAdmins.model_validate(yaml.safe_load(path.read_text()) or {}).admins
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PlatformConfigError(path, ".".join(map(str, err["loc"])), err["msg"]) from exc


def roles_of(actor: str, catalog: TenantCatalog) -> list[str]:
    roles = catalog.tenant.roles
    return [r for r in ("viewer", "approver", "admin") if actor in getattr(roles, r)]


def authorize(
    actor: str,
    catalog: TenantCatalog,
    allowed: list[str],
    action: str,
    all_tenants: Mapping[str, TenantCatalog],
    admins: list[str],
) -> str:
    """The role under which `actor` may do `action` on a model of `catalog`'s tenant."""
    tenant = catalog.tenant.name
    if actor in admins:
        return "platform_admin"
    held = roles_of(actor, catalog)
    granted = [r for r in held if r in allowed]
    if granted:
        return granted[0]
    elsewhere = sorted(n for n, c in all_tenants.items() if n != tenant and roles_of(actor, c))
    if not held and elsewhere:
        raise Refused(
            TENANT_ISOLATION,
            f"{actor} belongs to tenant {', '.join(elsewhere)} and may not {action} "
            f"a model of tenant {tenant}",
        )
    has = f"has role {', '.join(held)}" if held else "has no role"
    raise Refused(
        ROLE_REQUIRED,
        f"{actor} {has} in tenant {tenant}; {action} needs one of: {', '.join(allowed)}",
    )


def four_eyes(actor: str, launched_by: str, model: str, version: int) -> None:
    if actor == launched_by:
        raise Refused(
            FOUR_EYES,
            f"{actor} launched the training run of {model} v{version} and may not approve it",
        )
