"""The promotion workflow: candidate -> `challenger` + approval request -> `champion`, rollback.

One `Governance` object serves the sensor, the Dagster jobs and the CLI, so every path applies
the same policy, RBAC and audit trail. State lives in the platform database (requests,
approvals, the champion row); MLflow aliases mirror it. A move is all-or-nothing: everything it
needs (evidence, roles, the deployment manifest) is checked inside the database transaction
before anything changes, MLflow is touched only after the commit, and if MLflow then fails its
aliases are put back, the state rows are restored and the failure is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.env import data_root, platform_db_url
from platform_assets.governance import policy, rbac
from platform_assets.governance.audit import (
    PLATFORM_AUDIT_KEY,
    PLATFORM_CHAIN,
    append_refusal,
    model_key,
    publish_records,
)
from platform_assets.governance.catalogs import TenantCatalogs
from platform_assets.governance.effects import (
    Effects,
    MoveFailed,
    apply_effects,
    challenger_of,
    current_aliases,
    manifest_path,
    render_manifest,
    restore_aliases,
)
from platform_assets.governance.evidence import EvidenceReader
from platform_assets.governance.heads import head_file
from platform_assets.governance.identity import LAUNCHED_BY_TAG, SENSOR, Identity, as_identity
from platform_assets.governance.policy import Assessment, PolicyRejected
from platform_assets.governance.store import AuditRecord, GovernanceStore, now_iso
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.specs import ModelSpec

__all__ = ["Governance", "governance_for", "open_store"]

# Staging approvals gate `challenger` (what staging serves); production approvals gate `champion`.
ENV_ALIAS = {"staging": "challenger", "production": "champion"}
# Who may submit a candidate or roll back, beyond platform admins.
OPERATOR_ROLES = ["approver", "admin"]


@dataclass
class Outcome:
    """What an action did, for the CLI and the demo to print."""

    message: str
    records: list[AuditRecord]
    champion: int | None = None


def open_store() -> GovernanceStore:
    return GovernanceStore(platform_db_url())


class Governance:
    def __init__(
        self,
        store: GovernanceStore,
        mlflow: Any,
        instance: dg.DagsterInstance | None = None,
        catalogs: Mapping[str, TenantCatalog] | None = None,
        admins: list[str] | None = None,
        emit: Callable[[dg.AssetObservation], None] | None = None,
        deploy_dir: Path | None = None,
        head_file: Path | None = None,
    ):
        self.store = store
        self.mlflow = mlflow
        self.instance = instance
        self.catalogs = catalogs if catalogs is not None else TenantCatalogs()
        self.admins = admins if admins is not None else rbac.platform_admins()
        self.emit = emit
        self.deploy_dir = deploy_dir
        self.head_file = head_file
        self.evidence = EvidenceReader(instance, store.keys) if instance is not None else None

    def close(self) -> None:
        """Release the database connections (long-lived processes build one per tick or step)."""
        self.store.dispose()

    # --- lookups ------------------------------------------------------------------------------

    def locate(self, name: str) -> tuple[TenantCatalog, ModelSpec]:
        tenant, _, model = name.partition(".")
        catalog = self.catalogs.get(tenant)
        if catalog is None or model not in catalog.models:
            raise KeyError(f"no model {name!r}: registered names look like '<tenant>.<model>'")
        return catalog, catalog.models[model]

    def prefetch(self, records: list[dg.EventLogRecord]) -> None:
        """Read the evidence of these evaluation events in batched queries before assessing."""
        if self.evidence is not None:
            self.evidence.prefetch(records)

    def assess(
        self,
        name: str,
        version: int,
        champion: int | None,
        record: dg.EventLogRecord | None = None,
    ) -> Assessment:
        """Does `version` meet its policy against the given champion version? (see policy.py)"""
        catalog, spec = self.locate(name)
        return policy.assess(self.evidence, catalog, spec, version, champion, record)

    def submitted(self, name: str, version: int) -> bool:
        with self.store.engine.connect() as conn:
            return self.store.request(conn, name, version, "staging") is not None

    def champion(self, name: str) -> int | None:
        with self.store.engine.connect() as conn:
            row = self.store.champion(conn, name)
        return row[0] if row else None

    # --- actions ------------------------------------------------------------------------------

    def _run(self, actor: Identity, action: str, name: str, version: int | None, body) -> Outcome:
        """Run `body(conn, catalog, records, effects)` in one transaction of the tenant's chain.

        A refusal is audited and committed before it is raised; any other failure inside the
        transaction undoes the action and is recorded as `failed`. MLflow is changed only after
        the commit (see `effects.apply_effects`).
        """
        catalog, _ = self.locate_or_refuse(name)
        tenant = catalog.tenant.name
        records: list[AuditRecord] = []
        effects = Effects()
        failure: BaseException | None = None
        with self.store.transaction(tenant) as conn:
            self.store.check_state(conn, tenant, name)
            before = self.store.snapshot(conn, name)
            savepoint = conn.begin_nested()
            try:
                outcome = body(conn, catalog, records, effects)
                savepoint.commit()
            except Exception as exc:  # noqa: BLE001 - recorded below, then re-raised
                # Undo whatever the action wrote; keep only the record of what went wrong.
                savepoint.rollback()
                records.clear()
                effects = Effects()
                failure = exc
                refused = isinstance(exc, rbac.Refused)
                self._log(
                    conn,
                    records,
                    catalog,
                    name,
                    actor=actor,
                    action=action,
                    outcome="refused" if refused else "failed",
                    version=version,
                    reason=str(exc) if refused else f"{type(exc).__name__}: {exc}",
                    evidence={"rule": exc.rule, **exc.evidence} if refused else {},
                )
        if failure is None:
            aliases_before: dict[str, int] | None = None
            try:
                if effects.aliases:
                    aliases_before = current_aliases(self.mlflow, name)
                apply_effects(self.mlflow, self.deploy_dir, name, effects)
            except Exception as exc:  # noqa: BLE001 - undone and recorded, then re-raised
                failure = self._undo(
                    catalog, name, actor, action, version, before, aliases_before, exc, records
                )
        self._publish(catalog, name, records)
        if failure is not None:
            raise failure
        return outcome

    def _undo(
        self, catalog, name, actor, action, version, before, restored, exc, records
    ) -> MoveFailed:
        """Put the aliases back, restore the state rows and record the failure."""
        if restored is not None:
            restore_aliases(self.mlflow, name, restored)
        tenant = catalog.tenant.name
        with self.store.transaction(tenant) as conn:
            self.store.restore(conn, name, before)
            self._log(
                conn,
                records,
                catalog,
                name,
                actor=actor,
                action=action,
                outcome="failed",
                version=version,
                reason=f"MLflow could not mirror the move ({type(exc).__name__}: {exc}); "
                "aliases put back and state restored",
                evidence={"aliases_restored": restored or {}},
            )
        return MoveFailed(
            f"{name}: {action} undone: MLflow could not mirror it ({exc}); aliases and state "
            "are as they were"
        )

    def locate_or_refuse(self, name: str) -> tuple[TenantCatalog, ModelSpec]:
        try:
            return self.locate(name)
        except KeyError as exc:
            raise rbac.Refused("unknown-model", str(exc.args[0])) from exc

    def refuse_identity(
        self,
        exc: rbac.Refused,
        action: str,
        *,
        via: str,
        model: str = "",
        version: int | None = None,
        claimed: str = "",
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Record a caller refused before any action because its credential or claim did not
        establish who it is (bad token, reserved identity, `--as` outside local, an identity
        header from an untrusted address). The actor is `unidentified`: what the caller said it
        was goes in the evidence as `claimed`, never in `actor`. The record goes to the chain of
        the tenant of the model acted on, when that names one, else to the platform's chain; it
        names the model in its evidence but covers no state rows, since it changed none."""
        try:
            catalog, _ = self.locate(model) if model else (None, None)
        except KeyError:
            catalog = None
        chain = catalog.tenant.name if catalog is not None else PLATFORM_CHAIN
        record = append_refusal(
            self.store, chain, exc, action, via=via, model=model, version=version,
            claimed=claimed, details=details,
        )  # fmt: skip
        publish_records(
            model_key(chain, model) if catalog is not None else PLATFORM_AUDIT_KEY,
            model,
            [record],
            head_file=self.head_file,
            emit=self.emit,
        )
        return record

    def propose(self, name: str, version: int, actor: Identity | str, reason: str = "") -> Outcome:
        """Submit a candidate: policy check, then `challenger` + approval request(s)."""
        actor = as_identity(actor)

        def body(conn, catalog: TenantCatalog, records, effects: Effects) -> Outcome:
            _, spec = self.locate(name)
            if actor != SENSOR:
                rbac.authorize(
                    actor.name, catalog, OPERATOR_ROLES, "promote", self.catalogs, self.admins
                )
            first = self.store.request(conn, name, version, "staging")
            if first is not None:
                return Outcome(f"{name} v{version} was already proposed; nothing to do", records)
            row = self.store.champion(conn, name)
            assessment = self.assess(name, version, row[0] if row else None)
            if not assessment.ok:
                raise PolicyRejected(f"{name} v{version}: {assessment.why}", assessment.evidence)
            why = (
                assessment.why if reason in ("", assessment.why) else f"{reason}; {assessment.why}"
            )
            # For people reading MLflow; never read back as evidence.
            effects.tags.append((version, LAUNCHED_BY_TAG, assessment.evidence["launched_by"]))
            return self._open(
                conn, catalog, spec, name, version, "staging", actor, why, assessment.evidence,
                records, effects, log_proposal=True,
            )  # fmt: skip

        return self._run(actor, "propose", name, version, body)

    def _open(
        self, conn, catalog, spec, name, version, env, actor, why, evidence, records, effects,
        log_proposal: bool = False,
    ):  # fmt: skip
        """Open the request for `env`; with no approvals needed, complete it at once."""
        policy = getattr(spec.promotion.environments, env)
        conn.execute(
            self.store.requests.insert().values(
                model=name,
                version=version,
                environment=env,
                tenant=catalog.tenant.name,
                status="pending",
                required=policy.count,
                roles=json.dumps(policy.roles),
                launched_by=evidence["launched_by"],
                created_at=now_iso(),
                reason=why,
                evidence=json.dumps(evidence, sort_keys=True),
            )
        )
        if log_proposal:
            self._log(
                conn, records, catalog, name, actor=actor, action="propose", outcome="accepted",
                version=version, reason=why, evidence=evidence,
            )  # fmt: skip
        if policy.count == 0:
            return self._complete(
                conn, catalog, spec, name, version, env, actor, records, effects,
                f"{env} needs no approval",
            )  # fmt: skip
        self._log(
            conn,
            records,
            catalog,
            name,
            actor=actor,
            action="request_approval",
            outcome="pending",
            version=version,
            environment=env,
            reason=f"needs {policy.count} approval(s) from {', '.join(policy.roles)}",
        )
        return Outcome(
            f"{name} v{version} awaits {policy.count} {env} approval(s) from "
            f"{'/'.join(policy.roles)}",
            records,
            self.champion_in(conn, name),
        )

    def _log(
        self, conn, records: list[AuditRecord], catalog: TenantCatalog, name: str, *,
        actor: Identity, **kw,
    ):  # fmt: skip
        records.append(
            self.store.append(
                conn,
                tenant=catalog.tenant.name,
                model=name,
                actor=actor.name,
                identity=actor.source,
                **kw,
            )
        )

    def champion_in(self, conn, name: str) -> int | None:
        row = self.store.champion(conn, name)
        return row[0] if row else None

    def _complete(
        self, conn, catalog, spec, name, version, env, actor, records, effects, why
    ) -> Outcome:
        t = self.store.requests
        conn.execute(
            t.update()
            .where(t.c.model == name, t.c.version == version, t.c.environment == env)
            .values(status="approved")
        )
        if env == "staging":
            effects.aliases["challenger"] = version
            self._log(
                conn,
                records,
                catalog,
                name,
                actor=actor,
                action="challenger",
                outcome="aliased",
                version=version,
                environment=env,
                reason=why,
            )
            request = self.store.request(conn, name, version, env)
            return self._open(
                conn, catalog, spec, name, version, "production", actor, request["reason"],
                json.loads(request["evidence"]), records, effects,
            )  # fmt: skip
        return self._make_champion(conn, catalog, name, version, actor, why, records, effects)

    def _make_champion(self, conn, catalog, name, version, actor, why, records, effects):
        row = self.store.champion(conn, name)
        expected = row[0] if row else None
        if expected == version:
            raise rbac.Refused("already-champion", f"{name} v{version} is already champion")
        self._move_champion(
            conn, catalog, name, version, expected, expected, records, effects, actor=actor,
            action="promote", reason=why, evidence={"previous_champion": expected},
            conflict=f"the champion of {name} changed while promoting v{version}; retry",
        )  # fmt: skip
        if challenger_of(self.mlflow, name) == version:
            effects.aliases["challenger"] = None
        return Outcome(f"{name} v{version} is champion (previous: {expected})", records, version)

    def _move_champion(
        self, conn, catalog, name, version, expected, previous, records, effects, *, actor,
        action, reason, evidence, conflict,
    ) -> None:  # fmt: skip
        """Make `version` the champion if `expected` still is (`previous` becomes the previous
        one): its manifest rendered and validated first, the aliases and manifest to follow the
        transaction, and the audit record."""
        manifest = render_manifest(self.mlflow, self.deploy_dir, catalog, name, version)
        if not self.store.set_champion(conn, name, version, expected, previous):
            raise rbac.Refused("concurrent-change", conflict)
        effects.aliases.update(champion=version, previous=previous)
        effects.manifest = manifest
        self._log(
            conn, records, catalog, name, actor=actor, action=action, outcome="champion",
            version=version, environment="production", reason=reason,
            evidence={**evidence, "manifest": manifest_path(self.deploy_dir, catalog, name)},
        )  # fmt: skip

    def approve(self, name: str, version: int, actor: Identity | str, comment: str = "") -> Outcome:
        actor = as_identity(actor)

        def body(conn, catalog: TenantCatalog, records, effects: Effects) -> Outcome:
            _, spec = self.locate(name)
            request = self._pending(conn, name, version, "approve")
            env = request["environment"]
            role = rbac.authorize(
                actor.name,
                catalog,
                json.loads(request["roles"]),
                f"approve {env} for",
                self.catalogs,
                self.admins,
            )
            rbac.four_eyes(actor.name, request["launched_by"], name, version)
            given = self.store.approvers(conn, name, version, env)
            if actor.name in given:
                raise rbac.Refused(
                    "one-approval-per-person", f"{actor.name} already approved {name} v{version}"
                )
            conn.execute(
                self.store.approvals.insert().values(
                    model=name,
                    version=version,
                    environment=env,
                    actor=actor.name,
                    role=role,
                    ts=now_iso(),
                )
            )
            count = len(given) + 1
            self._log(
                conn,
                records,
                catalog,
                name,
                actor=actor,
                action="approve",
                outcome="approved",
                version=version,
                environment=env,
                reason=comment or f"approval {count} of {request['required']} as {role}",
                evidence={"role": role, "approvals": [*given, actor.name]},
            )
            if count < request["required"]:
                return Outcome(
                    f"{name} v{version}: {count} of {request['required']} {env} approvals",
                    records,
                    self.champion_in(conn, name),
                )
            return self._complete(
                conn, catalog, spec, name, version, env, actor, records, effects,
                f"approved by {', '.join([*given, actor.name])}",
            )  # fmt: skip

        return self._run(actor, "approve", name, version, body)

    def _pending(self, conn, name: str, version: int, action: str) -> dict:
        for env in ENV_ALIAS:
            request = self.store.request(conn, name, version, env)
            if request is not None and request["status"] == "pending":
                return request
        raise rbac.Refused(
            "no-pending-request", f"{name} v{version} has no pending request to {action}"
        )

    def reject(self, name: str, version: int, actor: Identity | str, reason: str) -> Outcome:
        actor = as_identity(actor)

        def body(conn, catalog: TenantCatalog, records, effects: Effects) -> Outcome:
            request = self._pending(conn, name, version, "reject")
            env = request["environment"]
            rbac.authorize(
                actor.name,
                catalog,
                json.loads(request["roles"]),
                "reject",
                self.catalogs,
                self.admins,
            )
            t = self.store.requests
            conn.execute(
                t.update()
                .where(t.c.model == name, t.c.version == version, t.c.environment == env)
                .values(status="rejected", reason=reason)
            )
            effects.tags.append((version, "mlplat.rejected_reason", reason))
            if challenger_of(self.mlflow, name) == version:
                effects.aliases["challenger"] = None
            self._log(
                conn,
                records,
                catalog,
                name,
                actor=actor,
                action="reject",
                outcome="rejected",
                version=version,
                environment=env,
                reason=reason,
            )
            return Outcome(f"{name} v{version} rejected: {reason}", records)

        return self._run(actor, "reject", name, version, body)

    def rollback(self, name: str, actor: Identity | str, reason: str) -> Outcome:
        """Move `champion` back to `previous`; the rolled-back version keeps no alias."""
        actor = as_identity(actor)

        def body(conn, catalog: TenantCatalog, records, effects: Effects) -> Outcome:
            rbac.authorize(
                actor.name, catalog, OPERATOR_ROLES, "roll back", self.catalogs, self.admins
            )
            row = self.store.champion(conn, name)
            if row is None or row[1] is None:
                raise rbac.Refused("no-previous-champion", f"{name} has no previous champion")
            current, previous = row
            self._move_champion(
                conn, catalog, name, previous, current, None, records, effects, actor=actor,
                action="rollback", reason=reason, evidence={"rolled_back": current},
                conflict=f"the champion of {name} changed; retry",
            )  # fmt: skip
            return Outcome(
                f"{name}: champion rolled back from v{current} to v{previous}", records, previous
            )

        return self._run(actor, "rollback", name, None, body)

    def record(
        self, name: str, actor: Identity, action: str, outcome: str, reason: str, **kw
    ) -> AuditRecord:
        """Append a platform observation (e.g. alias drift) to the model's chain."""
        catalog, _ = self.locate_or_refuse(name)
        records: list[AuditRecord] = []
        with self.store.transaction(catalog.tenant.name) as conn:
            self._log(
                conn, records, catalog, name, actor=actor, action=action, outcome=outcome,
                reason=reason, **kw,
            )  # fmt: skip
        self._publish(catalog, name, records)
        return records[0]

    # --- publishing ---------------------------------------------------------------------------

    def _publish(self, catalog: TenantCatalog, name: str, records: list[AuditRecord]) -> None:
        """Each record lands on the model asset (see audit.py)."""
        publish_records(
            model_key(catalog.tenant.name, name),
            name,
            records,
            head_file=self.head_file,
            emit=self.emit,
        )


def governance_for(
    mlflow: Any,
    instance: dg.DagsterInstance | None = None,
    emit: Callable[[dg.AssetObservation], None] | None = None,
) -> Governance:
    """The deployment's Governance: platform DB, team YAML, manifests under <data_root>/deploy."""
    return Governance(
        open_store(),
        mlflow,
        instance=instance,
        emit=emit,
        deploy_dir=data_root() / "deploy",
        head_file=head_file(),
    )
