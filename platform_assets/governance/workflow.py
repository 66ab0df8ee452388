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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.governance import rbac
from platform_assets.governance.evidence import EvidenceError, EvidenceReader
from platform_assets.governance.identity import (
    LAUNCHED_BY_TAG,
    SENSOR_IDENTITY,
    Identity,
    claimable,
)
from platform_assets.governance.store import AuditRecord, GovernanceStore, now_iso
from platform_assets.tenancy.catalog import (
    TenantCatalog,
    defs_root,
    load_tenant,
)
from platform_assets.tenancy.isolation import PLATFORM
from platform_assets.tenancy.specs import ModelSpec

__all__ = ["SENSOR_IDENTITY", "LAUNCHED_BY_TAG", "Governance", "governance_for", "open_store"]

# Refusals of callers whose identity could not be established and who named no model of a known
# tenant go to the platform's own chain; their heads are published on this asset.
PLATFORM_CHAIN = PLATFORM
PLATFORM_AUDIT_KEY = dg.AssetKey([PLATFORM, "audit_trail"])
UNIDENTIFIED = "unidentified"  # the actor of an identity refusal: the claim is not believed
# Staging approvals gate `challenger` (what staging serves); production approvals gate `champion`.
ENV_ALIAS = {"staging": "challenger", "production": "champion"}
ALIASES = ("champion", "previous", "challenger")
# Who may submit a candidate or roll back, beyond platform admins.
OPERATOR_ROLES = ["approver", "admin"]
SENSOR = Identity(SENSOR_IDENTITY, "platform")


class PolicyRejected(rbac.Refused):
    """A candidate that does not meet its model's promotion policy."""

    def __init__(self, message: str, evidence: dict[str, Any]):
        super().__init__("promotion-policy", message)
        self.evidence = evidence


class MoveFailed(RuntimeError):
    """MLflow could not mirror a committed move; it was undone and the failure recorded."""


@dataclass
class Assessment:
    ok: bool
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What an action did, for the CLI and the demo to print."""

    message: str
    records: list[AuditRecord]
    champion: int | None = None


@dataclass
class Effects:
    """What to do outside the database once it has committed: alias moves, tags, manifests."""

    aliases: dict[str, int | None] = field(default_factory=dict)  # alias -> version (None: drop)
    tags: list[tuple[int, str, str]] = field(default_factory=list)
    manifest: tuple[Any, int, dict] | None = None  # (tenant spec, version, rendered manifest)


def registered_name(tenant: str, model: str) -> str:
    return f"{tenant}.{model}"


def open_store() -> GovernanceStore:
    from platform_assets.env import platform_db_url

    return GovernanceStore(platform_db_url())


class TenantCatalogs(Mapping[str, TenantCatalog]):
    """Tenant folders parsed on first use. A folder that does not load raises only when its own
    tenant is asked for, and is left out when iterating, so a broken tenant never stops the
    governance of another (its own code location shows the error). Each tenant is looked up once
    per object: `governance_for` builds one per sensor tick, job step or command."""

    def __init__(self, root: Path | None = None):
        self.root = (root or defs_root()).resolve()
        self._found: dict[str, TenantCatalog] = {}

    def __getitem__(self, name: str) -> TenantCatalog:
        from platform_assets.tenancy.locations import tenant_folders

        if name not in self._found:
            if name not in tenant_folders(self.root):
                raise KeyError(name)
            self._found[name] = load_tenant(self.root / name)
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        from platform_assets.tenancy.locations import tenant_folders

        for name in tenant_folders(self.root):
            try:
                load_tenant(self.root / name)
            except (ValueError, OSError):
                continue
            yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


def as_identity(actor: Identity | str) -> Identity:
    """A bare string is a self-asserted identity: never a reserved one, always unverified."""
    if isinstance(actor, Identity):
        return actor
    return Identity(claimable(actor, "the caller's identity"), "unverified")


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
        """Does `version` meet its policy against the given champion version? Judged only on
        the platform's own records (see evidence.py); `record` is the evaluation report event
        when the caller already holds it."""
        from platform_assets.models.metrics import HIGHER_IS_BETTER, failed_thresholds

        catalog, spec = self.locate(name)
        if self.evidence is None:
            return Assessment(False, "no Dagster instance to read evidence from")
        try:
            found = self.evidence.gather(catalog, spec, version, record)
        except EvidenceError as exc:
            return Assessment(False, f"no evidence: {exc}", {"evidence_error": str(exc)})
        evidence = {**found.as_dict(), "champion_before": champion}
        metrics = found.metrics
        if found.problems:
            return Assessment(False, f"evidence incomplete: {'; '.join(found.problems)}", evidence)
        metric = spec.evaluation.primary_metric
        if metric not in metrics:
            return Assessment(False, f"v{version} has no evaluation ({metric} missing)", evidence)
        failed = failed_thresholds(metrics, spec.evaluation.thresholds)
        if failed:
            return Assessment(False, f"fails thresholds: {', '.join(failed)}", evidence)
        bad = [n for n, c in found.checks.items() if not c["passed"]]
        if bad:
            return Assessment(
                False, f"required checks not passed: {', '.join(sorted(bad))}", evidence
            )
        value = metrics[metric]
        if champion is None:
            return Assessment(
                True, f"first version to meet policy ({metric}={value:.4f})", evidence
            )
        if champion == version:
            return Assessment(False, f"v{version} is already champion", evidence)
        try:
            champ = self.evidence.gather(catalog, spec, champion).metrics.get(metric)
        except EvidenceError:
            champ = None
        if champ is None:
            return Assessment(True, f"champion v{champion} has no recorded {metric}", evidence)
        gain = value - champ if HIGHER_IS_BETTER[metric] else champ - value
        needed = spec.promotion.min_improvement
        evidence["improvement"] = round(gain, 6)
        if gain <= needed:
            return Assessment(
                False,
                f"{metric}={value:.4f} does not beat champion v{champion} ({champ:.4f}) "
                f"by more than {needed}",
                evidence,
            )
        return Assessment(
            True,
            f"{metric}={value:.4f} beats champion v{champion} ({champ:.4f}) by {gain:.4f}",
            evidence,
        )

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
        the commit (see `_apply`).
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
                    aliases_before = self._aliases(name)
                self._apply(name, effects)
            except Exception as exc:  # noqa: BLE001 - undone and recorded, then re-raised
                failure = self._undo(
                    catalog, name, actor, action, version, before, aliases_before, exc, records
                )
        self._publish(catalog, name, records)
        if failure is not None:
            raise failure
        return outcome

    def _aliases(self, name: str) -> dict[str, int]:
        model = self.mlflow.client().get_registered_model(name)
        return {a: int(v) for a, v in model.aliases.items() if a in ALIASES}

    def _set_aliases(self, name: str, target: dict[str, int | None]) -> None:
        client = self.mlflow.client()
        for alias, version in target.items():
            if version is None:
                if alias in self._aliases(name):
                    client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, str(version))

    def _apply(self, name: str, effects: Effects) -> None:
        """Mirror a committed move in MLflow and the deployment manifest."""
        if effects.aliases:
            self._set_aliases(name, effects.aliases)
        client = self.mlflow.client() if effects.tags else None
        for version, key, value in effects.tags:
            client.set_model_version_tag(name, str(version), key, value)
        if effects.manifest is not None and self.deploy_dir is not None:
            from platform_assets.governance.deploy import write_manifest

            tenant, version, manifest = effects.manifest
            write_manifest(tenant, name, manifest, self.deploy_dir)

    def _undo(
        self, catalog, name, actor, action, version, before, restored, exc, records
    ) -> MoveFailed:
        """Put the aliases back, restore the state rows and record the failure."""
        if restored is not None:
            self._set_aliases(name, {a: restored.get(a) for a in ALIASES})
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
        evidence = {"rule": exc.rule, "via": via, "claimed": claimed, **(details or {})}
        if model:
            evidence["model"] = model
        with self.store.transaction(chain) as conn:
            record = self.store.append(
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
        self._publish_records(
            dg.AssetKey([chain, "models", model.partition(".")[2]])
            if catalog is not None
            else PLATFORM_AUDIT_KEY,
            model,
            [record],
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
        if self._challenger(name) == version:
            effects.aliases["challenger"] = None
        return Outcome(f"{name} v{version} is champion (previous: {expected})", records, version)

    def _move_champion(
        self, conn, catalog, name, version, expected, previous, records, effects, *, actor,
        action, reason, evidence, conflict,
    ) -> None:  # fmt: skip
        """Make `version` the champion if `expected` still is (`previous` becomes the previous
        one): its manifest rendered and validated first, the aliases and manifest to follow the
        transaction, and the audit record."""
        manifest = self._render(catalog, name, version)
        if not self.store.set_champion(conn, name, version, expected, previous):
            raise rbac.Refused("concurrent-change", conflict)
        effects.aliases.update(champion=version, previous=previous)
        effects.manifest = manifest
        self._log(
            conn, records, catalog, name, actor=actor, action=action, outcome="champion",
            version=version, environment="production", reason=reason,
            evidence={**evidence, "manifest": self._manifest_path(catalog, name)},
        )  # fmt: skip

    def _challenger(self, name: str) -> int | None:
        mv = self.mlflow.version_by_alias(name, "challenger")
        return int(mv.version) if mv is not None else None

    def _render(self, catalog: TenantCatalog, name: str, version: int):
        """The deployment manifest, rendered and validated before anything moves."""
        if self.deploy_dir is None:
            return None
        from platform_assets.governance.deploy import render_inferenceservice

        uri = self.mlflow.client().get_model_version_download_uri(name, str(version))
        try:
            manifest = render_inferenceservice(catalog.tenant, name, version, uri)
        except ValueError as exc:
            raise rbac.Refused(
                "deployment-manifest",
                f"{name} v{version} cannot be deployed: {exc} (from tenant "
                f"{catalog.tenant.name}'s resources)",
            ) from exc
        return (catalog.tenant, version, manifest)

    def _manifest_path(self, catalog: TenantCatalog, name: str) -> str | None:
        if self.deploy_dir is None:
            return None
        return str(self.deploy_dir / catalog.tenant.name / f"{name.partition('.')[2]}.yaml")

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
            if self._challenger(name) == version:
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
        """Each record lands on the model asset (the UI's history); the last one is the chain
        head, also appended to the external head file when one is configured."""
        model = name.partition(".")[2]
        self._publish_records(dg.AssetKey([catalog.tenant.name, "models", model]), name, records)

    def _publish_records(self, key: dg.AssetKey, name: str, records: list[AuditRecord]) -> None:
        from platform_assets.governance.heads import append_head

        if not records:
            return
        if self.head_file is not None:
            append_head(self.head_file, records[-1])
        if self.emit is None:
            return
        for record in records:
            self.emit(
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


def governance_for(
    mlflow: Any,
    instance: dg.DagsterInstance | None = None,
    emit: Callable[[dg.AssetObservation], None] | None = None,
) -> Governance:
    """The deployment's Governance: platform DB, team YAML, manifests under <data_root>/deploy."""
    from platform_assets.env import data_root
    from platform_assets.governance.heads import head_file

    return Governance(
        open_store(),
        mlflow,
        instance=instance,
        emit=emit,
        deploy_dir=data_root() / "deploy",
        head_file=head_file(),
    )
