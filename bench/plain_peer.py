"""The scale benchmark's plain-Dagster peer of a tenant location, importing nothing but Dagster.

`definitions(parts)` builds, from what `scale_bench.plain_definitions` read off a location
(JSON: keys as path lists), bare `@dg.asset`s with the same keys, deps, groups and check specs,
the same separate `@dg.asset_check`s, asset jobs, schedules and automation sensors; no
resources, metadata, tags or op tags. Run as a code server, this file serves `defs`, built from
the JSON file named by MLPLAT_PLAIN_PEER_PARTS:

    dagster api grpc --python-file bench/plain_peer.py --attribute defs
"""

from __future__ import annotations

import json
import os
from functools import cache

import dagster as dg


def definitions(parts: dict) -> dg.Definitions:
    def asset(key, deps, group, specs) -> dg.AssetsDefinition:
        key = dg.AssetKey(key)

        @dg.asset(
            key=key,
            deps=[dg.AssetKey(d) for d in deps],
            group_name=group,
            check_specs=[dg.AssetCheckSpec(n, asset=key, blocking=b) for n, b in specs],
        )
        def _asset():  # no `-> None`: an op with checks has several outputs
            return None

        return _asset

    def check(key, name) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=dg.AssetKey(key), name=name)
        def _check() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        return _check

    return dg.Definitions(
        assets=[
            *[asset(*a) for a in parts["assets"]],
            *[dg.AssetSpec(dg.AssetKey(k), group_name=g) for k, g in parts["external"]],
        ],
        asset_checks=[check(*c) for c in parts["checks"]],
        jobs=[
            dg.define_asset_job(n, selection=[dg.AssetKey(k) for k in keys])
            for n, keys in parts["jobs"]
        ],
        schedules=[
            dg.ScheduleDefinition(name=n, cron_schedule=c, job_name=j)
            for n, c, j in parts["schedules"]
        ],
        sensors=[
            dg.AutomationConditionSensorDefinition(n, target=[dg.AssetKey(k) for k in keys])
            for n, keys in parts["sensors"]
        ],
    )


@cache
def _served() -> dg.Definitions:
    with open(os.environ["MLPLAT_PLAIN_PEER_PARTS"]) as f:
        return definitions(json.load(f))


def __getattr__(name: str):
    if name != "defs":
        raise AttributeError(name)
    return _served()
