"""What storage adds platform-wide: the nightly lake retention job."""

import dagster as dg

from platform_assets.storage.retention import lake_retention, lake_retention_schedule


def platform_definitions() -> dg.Definitions:
    return dg.Definitions(jobs=[lake_retention], schedules=[lake_retention_schedule])
