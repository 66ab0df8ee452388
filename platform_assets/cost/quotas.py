"""Run quotas per tenant, rendered from the tenants' YAML into the instance's `dagster.yaml`.

The run queue holds a tenant's extra runs back through tag concurrency limits on the `tenant`
tag; shared resources (GPUs) are Dagster pools. Only the block between the markers is ours.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from platform_assets.tenancy.catalog import TenantCatalog

BEGIN = "# BEGIN mlplat quotas"
END = "# END mlplat quotas"
# Shared pools and their slots; an asset joins one with `pool=` (GPU steps: `pool="gpu"`).
POOLS: dict[str, int] = {"gpu": 1}
# Steps of pools without an explicit limit: enough not to serialise ordinary work.
POOL_DEFAULT_LIMIT = 8


def quota_config(catalogs: dict[str, TenantCatalog]) -> dict:
    """The `concurrency` section: a per-tenant run limit and the pools' default."""
    per_tenant = {name: cat.tenant.max_concurrent_runs for name, cat in sorted(catalogs.items())}
    # Every matching limit applies, so the per-unique-value limit (which also covers tenants
    # not in the YAML, e.g. a typo in a tag) must not be lower than any tenant's own limit.
    ceiling = max(per_tenant.values(), default=1)
    limits: list[dict] = [
        {"key": "tenant", "value": {"applyLimitPerUniqueValue": True}, "limit": ceiling}
    ]
    limits += [{"key": "tenant", "value": n, "limit": v} for n, v in per_tenant.items()]
    return {
        "concurrency": {
            "runs": {
                "max_concurrent_runs": max(sum(per_tenant.values()), 1),
                "tag_concurrency_limits": limits,
            },
            "pools": {"default_limit": POOL_DEFAULT_LIMIT},
        }
    }


def render_block(catalogs: dict[str, TenantCatalog]) -> str:
    body = yaml.safe_dump(quota_config(catalogs), sort_keys=False)
    note = "# Written by `mlplat quotas write` from the tenants' YAML; edit those, not this."
    return f"{BEGIN}\n{note}\n{body}{END}\n"


def write_quotas(path: Path, catalogs: dict[str, TenantCatalog]) -> str:
    """Replace the marked block in `path` (append it if absent), keeping everything else."""
    text = path.read_text() if path.exists() else ""
    block = render_block(catalogs)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].removeprefix("\n")
        new = head + block + tail
    else:
        if "\nconcurrency:" in f"\n{text}" or "\nrun_coordinator:" in f"\n{text}":
            raise ValueError(
                f"{path} already has a concurrency or run_coordinator section outside the "
                f"'{BEGIN}' block; move it into the block or remove it"
            )
        new = f"{text.rstrip()}\n\n{block}" if text.strip() else block
    path.write_text(new)
    return new


def apply_pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """Set the shared pools' slots on the instance (pools are not configurable in dagster.yaml)."""
    for pool, slots in POOLS.items():
        instance.event_log_storage.set_concurrency_slots(pool, slots)
    return dict(POOLS)
