"""Run quotas per tenant, rendered from the platform's limits.yaml into `dagster.yaml`.

The run queue holds a tenant's extra runs back through tag concurrency limits on the `tenant`
tag; shared resources (GPUs) are Dagster pools. Only the block between the markers is ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import yaml

from platform_assets.tenancy.assets import GPU_POOL
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.limits import limits_for

BEGIN = "# BEGIN mlplat quotas"
END = "# END mlplat quotas"
# Shared pools and their slots; an asset joins one with `pool=` (`asset_kwargs` puts every
# step that requests GPUs in GPU_POOL).
POOLS: dict[str, int] = {GPU_POOL: 1}
# Steps of pools without an explicit limit: enough not to serialise ordinary work.
POOL_DEFAULT_LIMIT = 8


def tenant_run_limits(tenants: Iterable[str], max_concurrent_runs: int | None = None) -> dict:
    """The run queue's limits: each tenant's platform-owned `max_concurrent_runs` on the
    `tenant` tag, under an instance-wide ceiling (by default the sum of the tenants' limits)."""
    per_tenant = {name: limits_for(name).max_concurrent_runs for name in sorted(tenants)}
    # Every matching limit applies, so the per-unique-value limit (which also covers tenants
    # not in the catalog, e.g. a typo in a tag) must not be lower than any tenant's own limit.
    ceiling = max(per_tenant.values(), default=1)
    limits: list[dict] = [
        {"key": "tenant", "value": {"applyLimitPerUniqueValue": True}, "limit": ceiling}
    ]
    limits += [{"key": "tenant", "value": n, "limit": v} for n, v in per_tenant.items()]
    return {
        "max_concurrent_runs": max_concurrent_runs or max(sum(per_tenant.values()), 1),
        "tag_concurrency_limits": limits,
    }


def quota_config(
    catalogs: dict[str, TenantCatalog], max_concurrent_runs: int | None = None
) -> dict:
    """The run coordinator and `concurrency` sections: per-tenant run limits, pools' default.

    `max_concurrent_runs` is the instance-wide ceiling (what the machine or cluster can take);
    by default the sum of the tenants' limits.
    """
    runs = tenant_run_limits(catalogs, max_concurrent_runs)
    return {
        "run_coordinator": {
            # Queued; tags each run with its tenant (tenancy/runs.py), then refuses an
            # over-budget tenant's run before it starts.
            "module": "platform_assets.cost.coordinator",
            "class": "BudgetRunCoordinator",
        },
        "concurrency": {
            "runs": runs,
            "pools": {"default_limit": POOL_DEFAULT_LIMIT},
        },
    }


def render_block(catalogs: dict[str, TenantCatalog], max_concurrent_runs: int | None = None) -> str:
    body = yaml.safe_dump(quota_config(catalogs, max_concurrent_runs), sort_keys=False)
    note = (
        "# Written by `mlplat quotas write` from platform_assets/limits/limits.yaml; "
        "edit that, not this."
    )
    return f"{BEGIN}\n{note}\n{body}{END}\n"


def _existing_ceiling(text: str) -> int | None:
    config = yaml.safe_load(text) or {}
    for path in (("concurrency", "runs"), ("run_coordinator", "config")):
        section = config
        for part in path:
            section = section.get(part) or {} if isinstance(section, dict) else {}
        if isinstance(section, dict) and "max_concurrent_runs" in section:
            return int(section["max_concurrent_runs"])
    return None


def _drop_sections(text: str, names: tuple[str, ...]) -> str:
    """Remove top-level `name:` sections (the key line and its indented body)."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        top_level = line[:1] not in (" ", "\t", "\n", "#", "")
        if top_level:
            skipping = line.split(":", 1)[0].strip() in names
        if not skipping:
            out.append(line)
    return "".join(out)


def write_quotas(path: Path, catalogs: dict[str, TenantCatalog]) -> str:
    """Replace the marked block in `path`, keeping everything else.

    Without markers, the file's own `run_coordinator` and `concurrency` sections are replaced by
    the block (Dagster refuses both at once), keeping their instance-wide max_concurrent_runs.
    """
    text = path.read_text() if path.exists() else ""
    block = render_block(catalogs, _existing_ceiling(text))
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].removeprefix("\n")
        new = head + block + tail
    else:
        kept = _drop_sections(text, ("run_coordinator", "concurrency")).rstrip()
        new = f"{kept}\n\n{block}" if kept else block
    path.write_text(new)
    return new


def apply_pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """Set the shared pools' slots on the instance (pools are not configurable in dagster.yaml)."""
    for pool, slots in POOLS.items():
        instance.event_log_storage.set_concurrency_slots(pool, slots)
    return dict(POOLS)
