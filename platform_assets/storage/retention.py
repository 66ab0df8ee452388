"""Lake retention: a daily platform job deletes snapshots that are neither current nor within the
platform's retention period (`LakeResource.retention_days`, 90 days unless the platform sets it),
and the days of append-only logs (serving's request logs) older than that.
"""

import dagster as dg

from platform_assets.resources.lake import LakeResource


@dg.op(
    description="Delete lake snapshots that are not current and older than the retention period, "
    "and request-log days older than it.",
    tags={"tenant": "platform"},
)
def prune_lake(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output[int]:
    deleted = lake.prune()
    for snapshot in deleted:
        context.log.info(f"pruned {snapshot.label} (written {snapshot.written_at:%Y-%m-%d})")
    batches = lake.prune_logs()
    if batches:
        context.log.info(f"pruned {len(batches)} log batch(es) older than the retention period")
    return dg.Output(
        len(deleted),
        metadata={
            "retention_days": lake.retention_days,
            "deleted": len(deleted),
            "deleted_snapshots": dg.MetadataValue.json([s.label for s in deleted]),
            "deleted_log_batches": len(batches),
        },
    )


@dg.job(tags={"tenant": "platform"}, description=prune_lake.description)
def lake_retention() -> None:
    prune_lake()


lake_retention_schedule = dg.ScheduleDefinition(
    job=lake_retention,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prune the lake every night.",
)
