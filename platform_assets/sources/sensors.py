"""A new file in a tenant's inbox starts its pipeline: each tenant with Sources marked
`on_new_file: true` has a sensor that requests one run of the source and everything downstream
of it per new version of the source's file, once that version is complete.

Complete means: on S3, visible (an object appears only once its upload has completed); in a
local inbox, unchanged (inode, size and modification time) across two observations at least the
settle time apart, since a writer may still be appending. The run carries the version it was
requested for, and the source step refuses a local file that is no longer that version.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import dagster as dg

from platform_assets.cost.budget import over_budget_skip
from platform_assets.resources.lake import LakeResource
from platform_assets.sources.component import (
    INBOX_FILE_TAG,
    file_version,
    inbox,
    open_inbox_file,
)
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.runs import REASON_TAG, pipeline_job_name, pipeline_selection
from platform_assets.tenancy.specs import SourceSpec

# How long a local file must stay unchanged before it counts as complete: longer than a writer
# pauses between two writes (a copy, an upload being unpacked), short enough not to delay runs.
SETTLE_SECONDS = 30.0
# Half the settle time: a file that settled is seen so at most half a settle time late.
INTERVAL_SECONDS = 15


def inbox_sensor_name(tenant: str) -> str:
    return f"{tenant}_inbox"


@dataclass
class Watch:
    """What the sensor knows of one source's file: its cursor entry."""

    seen: str | None = None  # the last version a run was requested for
    pending: str | None = None  # a newer version, waiting to be complete
    since: float | None = None  # when `pending` was first seen

    def sees(self, version: str | None, now: float, settle: float) -> bool:
        """Record an observation at `now`; True when `version` is new and has been seen
        unchanged for `settle` seconds (0: complete as soon as it is visible)."""
        if version is None or version == self.seen:
            self.pending = self.since = None
            return False
        if version != self.pending or self.since is None:
            self.pending, self.since = version, now
        return now - self.since >= settle


def current_version(lake: LakeResource, tenant: str, spec: SourceSpec) -> str | None:
    """The version of a Source's inbox file now; None when no file is there."""
    if lake.is_local:
        try:
            # Opened as the step opens it: no link followed, a FIFO or a hard link refused.
            with open_inbox_file(lake.root.removeprefix("file://"), tenant, spec) as file:
                return file_version(os.fstat(file.fileno()))
        except FileNotFoundError:
            return None
    if lake.root.startswith("s3://"):
        from botocore.exceptions import ClientError

        uri = f"{inbox(lake.root, tenant)}/{spec.path}"
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            head = lake.s3_client().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        if head.get("VersionId") not in (None, "null"):
            return f"v{head['VersionId']}"
        # Without bucket versioning: the ETag (the content) and when it was put, so the same
        # content put again after another one is a new version, not a run key already used.
        etag = head["ETag"].strip('"')
        return f"{etag}-{int(head['LastModified'].timestamp())}"
    raise ValueError(
        f"{inbox_sensor_name(tenant)}: on_new_file watches a local or s3:// lake, and the lake "
        f"is {lake.root}"
    )


def inbox_sensor(
    tenant: str,
    specs: list[SourceSpec],
    settle_seconds: float = SETTLE_SECONDS,
    interval_seconds: int = INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The sensor of a tenant's `specs` (Sources with `on_new_file`); the settle time and tick
    interval are arguments so that tests need not wait the production ones."""
    files = ", ".join(s.path or "" for s in specs)

    @dg.sensor(
        name=inbox_sensor_name(tenant),
        job_name=pipeline_job_name(tenant),
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs {tenant}'s pipeline from a source when a new file lands complete in "
        f"its inbox ({files}).",
    )
    def inbox_files(context: dg.SensorEvaluationContext, lake: LakeResource):
        cursor = json.loads(context.cursor or "{}")
        watches = {s.name: Watch(**cursor.get(s.name, {})) for s in specs}
        # On S3 a visible object is complete: its upload finished before it could be listed.
        settle = settle_seconds if lake.is_local else 0.0
        now = time.time()
        ready = []
        for spec in specs:
            version = current_version(lake, tenant, spec)
            if watches[spec.name].sees(version, now, settle):
                ready.append((spec, version))
        skip = over_budget_skip(context.instance, tenant) if ready else None
        if skip is None:
            for spec, version in ready:
                watches[spec.name] = Watch(seen=version)
        # Over budget, the file stays pending (settled) and runs on the first tick it may.
        context.update_cursor(json.dumps({n: asdict(w) for n, w in watches.items()}))
        if skip is not None:
            return skip
        if not ready:
            waiting = [s.path or "" for s in specs if watches[s.name].pending]
            if waiting:
                return dg.SkipReason(
                    f"waiting for {', '.join(waiting)} to stay unchanged for {settle:g} s"
                )
            return dg.SkipReason(f"no new file in {tenant}'s inbox ({files})")
        graph = context.repository_def.asset_graph
        requests = []
        for spec, version in ready:
            key = dg.AssetKey([tenant, "sources", spec.name])
            selection = dg.AssetSelection.assets(key).downstream() & pipeline_selection(tenant)
            # The run key dedupes a version's run even if the cursor were lost; the tag tells
            # the source step which version it may read.
            file = f"{spec.name}:{version}"
            requests.append(
                dg.RunRequest(
                    run_key=file,
                    asset_selection=sorted(
                        selection.resolve(graph), key=lambda k: k.to_user_string()
                    ),
                    tags={
                        "tenant": tenant,
                        REASON_TAG: f"new file {spec.path} in {tenant}'s inbox (source "
                        f"{spec.name})",
                        INBOX_FILE_TAG: file,
                    },
                )
            )
        return requests

    return inbox_files


def tenant_inbox_sensors(catalog: TenantCatalog) -> list[dg.SensorDefinition]:
    """The tenant's inbox sensor, when any of its sources runs on a new file."""
    specs = [s for s in catalog.sources.values() if s.on_new_file]
    return [inbox_sensor(catalog.tenant.name, specs)] if specs else []
