"""Where the audit chains' heads are published, out of reach of a platform-database writer.

After every action the newest record of the tenant's chain is an `AssetObservation` on the model
asset in Dagster's event log (`audit_chain`, `audit_seq`, `audit_hash`), and, when
MLPLAT_AUDIT_HEAD_FILE names one, a line appended to an external append-only file (a WORM volume,
or a file synced to an object store with object lock). `mlplat audit verify` compares the
database's chains with the newest head each source holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from platform_assets.governance.store import AuditRecord, Head


def head_file() -> Path | None:
    path = os.environ.get("MLPLAT_AUDIT_HEAD_FILE")
    return Path(path) if path else None


def append_head(path: Path, record: AuditRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"tenant": record.tenant, "seq": record.seq, "hash": record.hash, "ts": record.ts}
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def file_heads(path: Path) -> list[Head]:
    """The newest head per tenant in the head file."""
    newest: dict[str, Head] = {}
    if not path.exists():
        return []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            head = Head(entry["tenant"], int(entry["seq"]), entry["hash"], f"the head file {path}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: line {n} is not a chain head ({exc})") from exc
        if head.tenant not in newest or head.seq >= newest[head.tenant].seq:
            newest[head.tenant] = head
    return list(newest.values())


def audit_asset_keys(instance: dg.DagsterInstance) -> list[dg.AssetKey]:
    """Every asset the event log knows that audit heads are published on: each model asset
    (`<tenant>/models/<name>`) and the platform chain's. Read from Dagster, never from the defs
    folders, so a tenant whose folder (or a model of it) is gone keeps its published heads."""
    keys = instance.get_asset_keys()
    return sorted(
        (k for k in keys if len(k.path) == 3 and k.path[1] == "models"),
        key=lambda k: k.path,
    )


def dagster_heads(instance: dg.DagsterInstance, model_keys: list[dg.AssetKey]) -> list[Head]:
    """The newest head per tenant among the audit observations on the model assets."""
    newest: dict[str, Head] = {}
    for key in model_keys:
        records = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=key), limit=100, ascending=False
        ).records
        for record in records:
            md = record.asset_observation.metadata
            if "audit_chain" not in md or "audit_seq" not in md:
                continue
            head = Head(
                md["audit_chain"].value,
                int(md["audit_seq"].value),
                md["audit_hash"].value,
                "the Dagster event log",
            )
            if head.tenant not in newest or head.seq > newest[head.tenant].seq:
                newest[head.tenant] = head
            break  # newest first: the first audit observation is this asset's latest
    return list(newest.values())


def published_heads(
    instance: dg.DagsterInstance | None, model_keys: list[dg.AssetKey], path: Path | None
) -> list[Head]:
    heads = dagster_heads(instance, model_keys) if instance is not None else []
    if path is not None:
        heads += file_heads(path)
    return heads
