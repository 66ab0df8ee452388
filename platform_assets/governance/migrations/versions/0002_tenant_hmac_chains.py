"""Per-tenant HMAC audit chains that cover state; the old global SHA-256 chain is re-signed.

The old chain is verified first (an upgrade never launders a broken chain); each old record
moves, in order, to its tenant's new chain with its old sequence number and hash kept in its
evidence, and one `schema_upgrade` record per model then covers that model's state rows.

Revision ID: 0002
Revises: 0001
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import context, op

from platform_assets.governance.store import GENESIS, GovernanceStore, canonical_json, tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_FIELDS = (
    "seq", "ts", "actor", "action", "outcome", "tenant", "model", "version", "environment",
    "reason", "evidence",
)  # fmt: skip


def _old_hash(row: dict, evidence: dict) -> str:
    fields = {k: row[k] for k in OLD_FIELDS} | {"evidence": evidence}
    return hashlib.sha256((canonical_json(fields) + row["prev_hash"]).encode()).hexdigest()


def upgrade() -> None:
    attrs = context.config.attributes
    schema, keys = attrs.get("schema"), attrs["keys"]
    conn = op.get_bind()
    old = sa.Table("gov_audit", sa.MetaData(schema=schema), autoload_with=conn)
    rows = [dict(r) for r in conn.execute(sa.select(old).order_by(old.c.seq)).mappings()]
    prev = GENESIS
    for expected, row in enumerate(rows, start=1):
        evidence = json.loads(row["evidence"])
        if (
            row["seq"] != expected
            or row["prev_hash"] != prev
            or _old_hash(row, evidence) != row["hash"]
        ):
            raise RuntimeError(
                f"cannot upgrade the platform database: the existing audit chain is broken at "
                f"record {row['seq']} (expected record {expected} linking to {prev[:12]}); "
                "investigate with the previous release's `mlplat audit verify` first"
            )
        prev = row["hash"]

    # The rows are in memory; Postgres keeps index names across a rename, so drop, not rename.
    op.drop_table("gov_audit", schema=schema)
    md = sa.MetaData(schema=schema)
    tabs = tables(md)
    tabs[0].create(conn)

    # Re-sign through a store bound to this connection's transaction.
    store = GovernanceStore.__new__(GovernanceStore)
    store._keys = None
    store._load_keys = keys if callable(keys) else (lambda: keys)
    store.audit, store.requests, store.approvals, store.champions = tabs
    store.dialect = conn.dialect.name
    for row in rows:
        evidence = json.loads(row["evidence"])
        evidence["legacy"] = {"seq": row["seq"], "hash": row["hash"]}
        # Legacy records predate state coverage: they keep their model but no state digest.
        store.append(
            conn,
            tenant=row["tenant"],
            model=row["model"],
            cover_state=False,
            actor=row["actor"],
            identity="unverified",
            action=row["action"],
            outcome=row["outcome"],
            version=row["version"],
            environment=row["environment"],
            reason=row["reason"],
            evidence=evidence,
        )
    models = {}
    for table in tabs[1:]:
        for r in conn.execute(sa.select(table.c.model).distinct()):
            models[r.model] = r.model.partition(".")[0]
    for model, tenant in sorted(models.items()):
        store.append(
            conn,
            tenant=tenant,
            actor="mlplat/migration",
            identity="platform",
            action="schema_upgrade",
            outcome="covered",
            model=model,
            reason="revision 0002: state rows of the model as found at upgrade",
        )
