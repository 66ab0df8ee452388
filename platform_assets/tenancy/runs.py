"""Every run carries the `tenant` tag, and no run spans tenants, whatever launched it.

Two guards, because runs reach Dagster two ways. Runs submitted to the instance (UI, schedules,
sensors, automation, backfills) pass `TenantRunCoordinator` (dagster.yaml), which tags them from
what they materialize before they queue, so per-tenant run limits apply to them, and refuses a
run whose `tenant` tag names a tenant its code location does not load. Runs executed directly
(`dagster job execute`, `dagster asset materialize`, `materialize()`) start no queue: each tenant
step calls `claim_run` first, which tags an untagged run with the step's tenant and fails a step
of one tenant in a run tagged for another.

The `tenant` tag is a launcher's claim. What a run *counts for* (SLOs, metrics, the killed-step
bill) is `attributed_tenant`: the tenant of the code location that launched it, from what Dagster
recorded about the run's origin, never from a tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.tags import CODE_LOCATION_TAG

from platform_assets.tenancy.isolation import PLATFORM, IsolationError
from platform_assets.tenancy.locations import GROUPS_FILE, MODULE, location_groups

TAG = "tenant"
# Why a sensor launched a run, for the person reading it in the UI (drift, a new inbox file).
REASON_TAG = "mlplat/reason"
# Dagster's own tag: the location name of the run's remote origin, written by Dagster over any
# value the launcher gave, on every run launched through a workspace (UI, sensors, schedules).
LOCATION_TAG = CODE_LOCATION_TAG


# dagster-k8s reads pod configuration from run tags with this prefix (`dagster-k8s/config`,
# `dagster-k8s/resource_requirements`) and merges it into the run worker's pod, the one that
# holds a Kubernetes token. Pods are the platform's template; a launcher may not add to them.
POD_CONFIG_TAG_PREFIX = "dagster-k8s/"


def refuse_pod_config_tags(run: dg.DagsterRun) -> None:
    """IsolationError when a launcher (the UI, GraphQL, a sensor) tagged `run` with pod
    configuration. The platform sets its own as op tags in code, never as run tags."""
    tags = sorted(t for t in run.tags if t.startswith(POD_CONFIG_TAG_PREFIX))
    if tags:
        raise IsolationError(
            f"run {run.run_id} of {run.job_name} carries run tag(s) {', '.join(tags)}: pods are "
            "the platform's template, and no run may add pod configuration; launch it without "
            f"{POD_CONFIG_TAG_PREFIX}* tags"
        )


def run_location(run: dg.DagsterRun) -> str | None:
    """The code location that launched `run`, as Dagster recorded it: the remote origin of a run
    launched through a workspace, or the `platform_assets.locations` attribute a direct
    `dagster job execute -m platform_assets.locations -a <location>` loaded. None for a run
    executed in a Python process holding the instance (`materialize()`), which no location
    launched. Never a tag: a launcher chooses its tags."""
    if run.remote_job_origin is not None:
        return run.remote_job_origin.location_name
    code = run.job_code_origin
    pointer = code.repository_origin.code_pointer if code is not None else None
    if isinstance(pointer, ModuleCodePointer) and pointer.module == MODULE:
        return pointer.fn_name
    return None


@cache
def location_members(location: str) -> tuple[str, ...]:
    """The tenants a code location loads: the platform's group, else the tenant it is named
    after (read once per process, as `location_of`)."""
    return location_groups(GROUPS_FILE).get(location, (location,))


def location_tenant(location: str | None, claimed: str | None) -> str | None:
    """The tenant a run from `location` counts for; `claimed` (its `tenant` tag) only picks
    among the members of a location that loads several. None: no location launched it, or it
    claims a tenant its location does not load."""
    if location is None:
        return None
    if location == PLATFORM:
        return PLATFORM
    members = location_members(location)
    if len(members) == 1:
        return members[0]
    return claimed if claimed in members else None


def attributed_tenant(run: dg.DagsterRun) -> str | None:
    """The tenant `run` counts for: its launching location's (see `location_tenant`)."""
    return location_tenant(run_location(run), run.tags.get(TAG))


def claim_run(tenant: str) -> None:
    """In a step of `tenant`: tag the run with it, or refuse a run tagged for another tenant."""
    context = dg.OpExecutionContext.get()
    # From storage, not `context.run`: an earlier step in this process may have just tagged it.
    run = context.instance.get_run_by_id(context.run_id)
    tagged = (run.tags if run is not None else context.run.tags).get(TAG)
    if tagged is None:
        context.instance.add_run_tags(context.run_id, {TAG: tenant})
    elif tagged != tenant:
        raise IsolationError(
            f"run {context.run_id} is tenant {tagged!r}'s; a step of tenant {tenant!r} "
            f"({context.op.name}) may not run in it: one run never spans tenants"
        )


def _config_tenant(run_config: Mapping[str, Any]) -> str | None:
    """The tenant a governance job acts on: its op config names `<tenant>.<model>`."""
    for op in (run_config.get("ops") or {}).values():
        model = ((op or {}).get("config") or {}).get("registered_model")
        if isinstance(model, str) and "." in model:
            return model.split(".", 1)[0]
    return None


def run_tenant(run: dg.DagsterRun) -> str:
    """The one tenant a run belongs to; IsolationError when it would span tenants, or when a
    tenant's code location launched it for a tenant that location does not load."""
    location = run_location(run)
    if location is None or location == PLATFORM:
        # The platform's governance jobs act for the tenant their config names.
        return run.tags.get(TAG) or _selected_tenant(run)
    members = location_members(location)
    tenant = run.tags.get(TAG) or _selected_tenant(run, default=None)
    if tenant is None and len(members) == 1:
        tenant = members[0]
    if tenant not in members:
        raise IsolationError(
            f"run {run.run_id} of {run.job_name} is tagged tenant {tenant!r} but was launched "
            f"from code location {location!r}, which runs only tenant(s) {', '.join(members)}: "
            "a run counts for the tenant whose code location launched it"
        )
    return tenant


def _selected_tenant(run: dg.DagsterRun, default: str | None = PLATFORM) -> str | None:
    """The tenant of the assets a run selects, else of the model its config names."""
    keys = set(run.asset_selection or ()) | {c.asset_key for c in run.asset_check_selection or ()}
    tenants = sorted({k.path[0] for k in keys})
    if len(tenants) > 1:
        raise IsolationError(
            f"run {run.run_id} of {run.job_name} selects assets of tenants "
            f"{', '.join(tenants)}: one run never spans tenants; launch one run per tenant"
        )
    if tenants:
        return tenants[0]
    return _config_tenant(run.run_config or {}) or default


class TenantRunCoordinator(QueuedRunCoordinator):
    """`QueuedRunCoordinator` that tags each run with its tenant before it queues, and refuses
    a run that carries pod configuration as run tags."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        try:
            refuse_pod_config_tags(run)
            tenant = run_tenant(run)
        except IsolationError as exc:
            self._instance.report_run_failed(run, message=str(exc))
            return self._instance.get_run_by_id(run.run_id) or run
        if run.tags.get(TAG) != tenant:
            self._instance.add_run_tags(run.run_id, {TAG: tenant})
            run = self._instance.get_run_by_id(run.run_id) or run
            context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)


def pipeline_job_name(tenant: str) -> str:
    """The job that runs a tenant's pipeline: every asset of its group but its cost."""
    return f"{tenant}_pipeline"


def pipeline_selection(tenant: str) -> dg.AssetSelection:
    return dg.AssetSelection.groups(tenant) - dg.AssetSelection.tag("asset_type", "cost")


def automation_sensor_name(tenant: str) -> str:
    return f"{tenant}_automation"
