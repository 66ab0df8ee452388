"""Publishing the audit trail: each record as an observation on its model asset, the chain's head
also in the external head file, and the refusals of callers whose identity was not established."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.governance import rbac
from platform_assets.governance.heads import append_head
from platform_assets.governance.store import AuditRecord, GovernanceStore
from platform_assets.tenancy.isolation import PLATFORM

# Refusals of callers whose identity could not be established and who named no model of a known
# tenant go to the platform's own chain; their heads are published on this asset.
PLATFORM_CHAIN = PLATFORM
PLATFORM_AUDIT_KEY = dg.AssetKey([PLATFORM, "audit_trail"])
UNIDENTIFIED = "unidentified"  # the actor of an identity refusal: the claim is not believed


def model_key(tenant: str, name: str) -> dg.AssetKey:
    """The model asset whose history shows the records of registered model `name`."""
    return dg.AssetKey([tenant, "models", name.partition(".")[2]])


def publish_records(
    key: dg.AssetKey,
    name: str,
    records: list[AuditRecord],
    *,
    head_file: Path | None,
    emit: Callable[[dg.AssetObservation], None] | None,
) -> None:
    """Each record lands on `key` (the UI's history); the last one is the chain head, also
    appended to the external head file when one is configured."""
    if not records:
        return
    if head_file is not None:
        append_head(head_file, records[-1])
    if emit is None:
        return
    for record in records:
        emit(
            dg.AssetObservation(
                asset_key=key,
                metadata={
                    "event": f"{record.action}:{record.outcome}",
                    "registered_model": name,
                    "version": record.version if record.version is not None else 0,
                    "environment": record.environment,
                    "actor": record.actor,
                    "identity": record.identity,
                    "reason": record.reason,
                    "audit_chain": record.tenant,
                    "audit_seq": record.seq,
                    "audit_hash": record.hash,
                    "evidence": dg.MetadataValue.json(record.evidence),
                },
            )
        )


def append_refusal(
    store: GovernanceStore,
    chain: str,
    exc: rbac.Refused,
    action: str,
    *,
    via: str,
    model: str,
    version: int | None,
    claimed: str,
    details: dict[str, Any] | None,
) -> AuditRecord:
    """Append to `chain` the refusal of a caller whose identity was not established: the actor is
    `unidentified`, what it claimed to be goes in the evidence, never in `actor`."""
    evidence = {"rule": exc.rule, "via": via, "claimed": claimed, **(details or {})}
    if model:
        evidence["model"] = model
    with store.transaction(chain) as conn:
        return store.append(
            conn,
            tenant=chain,
            actor=UNIDENTIFIED,
            identity="refused",
            action=action,
            outcome="refused",
            version=version,
            reason=str(exc),
            evidence=evidence,
        )
