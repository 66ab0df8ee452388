"""The promotion workflow: candidate -> `challenger` + approval request -> `champion`, rollback.

One `Governance` object serves the sensor, the Dagster jobs and the CLI, so every path applies
the same policy, RBAC and audit trail. State lives in the platform database (requests,
approvals, the champion row); MLflow aliases mirror it and are only moved under the database's
write lock, so MLflow's last-writer-wins never decides who is champion.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.governance import rbac
from platform_assets.governance.store import AuditRecord, GovernanceStore, now_iso
from platform_assets.tenancy.catalog import TenantCatalog, check_model_refs, defs_root, load_tenant
from platform_assets.tenancy.specs import ModelSpec

SENSOR_IDENTITY = "mlplat/promotion_sensor"
LAUNCHED_BY_TAG = "mlplat/launched_by"
# Staging approvals gate `challenger` (what staging serves); production approvals gate `champion`.
ENV_ALIAS = {"staging": "challenger", "production": "champion"}
# Who may submit a candidate or roll back, beyond platform admins.
OPERATOR_ROLES = ["approver", "admin"]


class PolicyRejected(rbac.Refused):
    """A candidate that does not meet its model's promotion policy."""

    def __init__(self, message: str, evidence: dict[str, Any]):
        super().__init__("promotion-policy", message)
        self.evidence = evidence


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


def registered_name(tenant: str, model: str) -> str:
    return f"{tenant}.{model}"


def open_store() -> GovernanceStore:
    from platform_assets.execution.env import platform_db_url

    return GovernanceStore(platform_db_url())


class TenantCatalogs(Mapping[str, TenantCatalog]):
    """Tenant folders parsed on first use. A folder that does not load raises only when its own
    tenant is asked for, and is left out when iterating, so a broken tenant never stops the
    governance of another (its own code location shows the error)."""

    def __init__(self, root: Path | None = None):
        self.root = (root or defs_root()).resolve()

    def __getitem__(self, name: str) -> TenantCatalog:
        from platform_assets.tenancy.locations import tenant_folders

        if name not in tenant_folders(self.root):
            raise KeyError(name)
        return load_tenant(self.root / name)

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
    ):
        self.store = store
        self.mlflow = mlflow
        self.instance = instance
        self.catalogs = catalogs if catalogs is not None else TenantCatalogs()
        self.admins = admins if admins is not None else rbac.platform_admins()
        self.emit = emit
        self.deploy_dir = deploy_dir

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

    def _version(self, name: str, version: int):
        return self.mlflow.client().get_model_version(name, str(version))

    def launched_by(self, mv) -> str:
        """Who launched the training run: the MLflow tag, else the Dagster run's tag."""
        if LAUNCHED_BY_TAG in mv.tags:
            return mv.tags[LAUNCHED_BY_TAG]
        run_id = mv.tags.get("dagster_run_id")
        run = self.instance.get_run_by_id(run_id) if self.instance and run_id else None
        return run.tags.get(LAUNCHED_BY_TAG, "system") if run else "system"

    def check_results(self, catalog: TenantCatalog, spec: ModelSpec) -> dict[str, dict]:
        """Latest evaluation of every check the policy requires, keyed by check name."""
        tenant = catalog.tenant.name
        ts_key = dg.AssetKey([tenant, "training_sets", spec.name])
        wanted: dict[str, dg.AssetCheckKey] = {}
        required = spec.promotion.required_checks
        if "training_set" in required:
            wanted[f"{ts_key.to_user_string()}:expectations"] = dg.AssetCheckKey(
                ts_key, "expectations"
            )
        if "leakage" in required:
            wanted[f"{ts_key.to_user_string()}:leakage"] = dg.AssetCheckKey(ts_key, "leakage")
        if "feature_views" in required:
            for owner, fs in check_model_refs(catalog, spec).values():
                key = dg.AssetKey([owner, "features", fs.name])
                wanted[f"{key.to_user_string()}:expectations"] = dg.AssetCheckKey(
                    key, "expectations"
                )
        if not wanted:
            return {}
        if self.instance is None:
            return {n: {"passed": None, "why": "no Dagster instance to read"} for n in wanted}
        latest = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            list(wanted.values())
        )
        out = {}
        for name, key in wanted.items():
            record = latest.get(key)
            evaluation = record.evaluation if record else None
            out[name] = {
                "passed": bool(evaluation.passed) if evaluation else None,
                "run_id": record.run_id if record else None,
            }
        return out

    def _data_versions(self, catalog: TenantCatalog, spec: ModelSpec) -> dict[str, str]:
        if self.instance is None:
            return {}
        keys = [dg.AssetKey([catalog.tenant.name, "training_sets", spec.name])] + [
            dg.AssetKey([owner, "features", fs.name])
            for owner, fs in check_model_refs(catalog, spec).values()
        ]
        out = {}
        for key in keys:
            event = self.instance.get_latest_materialization_event(key)
            mat = event.asset_materialization if event else None
            if mat is not None and mat.tags and "dagster/data_version" in mat.tags:
                out[key.to_user_string()] = mat.tags["dagster/data_version"]
        return out

    def assess(self, name: str, version: int, champion: int | None) -> Assessment:
        """Does `version` meet its policy against the given champion version?"""
        from platform_assets.models.training import HIGHER_IS_BETTER, failed_thresholds

        catalog, spec = self.locate(name)
        mv = self._version(name, version)
        metrics = {k[5:]: float(v) for k, v in mv.tags.items() if k.startswith("eval_")}
        checks = self.check_results(catalog, spec)
        evidence = {
            "metrics": metrics,
            "checks": checks,
            "dagster_run_id": mv.tags.get("dagster_run_id"),
            "mlflow_run_id": mv.run_id,
            "model_version": version,
            "training_set_version": mv.tags.get("training_set_version"),
            "feature_service": mv.tags.get("feature_service"),
            "data_versions": self._data_versions(catalog, spec),
            "launched_by": self.launched_by(mv),
            "champion_before": champion,
        }
        metric = spec.evaluation.primary_metric
        if metric not in metrics:
            return Assessment(False, f"v{version} has no evaluation ({metric} missing)", evidence)
        failed = failed_thresholds(metrics, spec.evaluation.thresholds)
        if failed:
            return Assessment(False, f"fails thresholds: {', '.join(failed)}", evidence)
        bad = [n for n, c in checks.items() if not c["passed"]]
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
        champ_tag = self._version(name, champion).tags.get(f"eval_{metric}")
        if champ_tag is None:
            return Assessment(True, f"champion v{champion} has no {metric}", evidence)
        champ = float(champ_tag)
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

    def _run(self, actor: str, action: str, name: str, version: int | None, body) -> Outcome:
        """Run `body(conn, records)` in one serialized transaction; a refusal is audited and
        committed before it is raised, so refused attempts stay in the trail."""
        catalog, _ = self.locate_or_refuse(name)
        records: list[AuditRecord] = []
        refused: rbac.Refused | None = None
        with self.store.transaction() as conn:
            savepoint = conn.begin_nested()
            try:
                outcome = body(conn, catalog, records)
                savepoint.commit()
            except rbac.Refused as exc:
                # Undo whatever the action wrote before it was refused; keep only the refusal.
                savepoint.rollback()
                records.clear()
                refused = exc
                self._log(
                    conn,
                    records,
                    catalog,
                    name,
                    actor=actor,
                    action=action,
                    outcome="refused",
                    version=version,
                    reason=str(exc),
                    evidence={"rule": exc.rule, **exc.evidence},
                )
        for record in records:
            self._observe(catalog, name, record)
        if refused is not None:
            raise refused
        return outcome

    def locate_or_refuse(self, name: str) -> tuple[TenantCatalog, ModelSpec]:
        try:
            return self.locate(name)
        except KeyError as exc:
            raise rbac.Refused("unknown-model", str(exc.args[0])) from exc

    def propose(self, name: str, version: int, actor: str, reason: str = "") -> Outcome:
        """Submit a candidate: policy check, then `challenger` + approval request(s)."""

        def body(conn, catalog: TenantCatalog, records: list[AuditRecord]) -> Outcome:
            _, spec = self.locate(name)
            if actor != SENSOR_IDENTITY:
                rbac.authorize(
                    actor, catalog, OPERATOR_ROLES, "promote", self.catalogs, self.admins
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
            self._log(
                conn,
                records,
                catalog,
                name,
                actor=actor,
                action="propose",
                outcome="accepted",
                version=version,
                reason=why,
                evidence=assessment.evidence,
            )
            self.mlflow.client().set_model_version_tag(
                name, str(version), LAUNCHED_BY_TAG, assessment.evidence["launched_by"]
            )
            return self._open(
                conn,
                catalog,
                spec,
                name,
                version,
                "staging",
                actor,
                why,
                assessment.evidence,
                records,
            )

        return self._run(actor, "propose", name, version, body)

    def _open(self, conn, catalog, spec, name, version, env, actor, why, evidence, records):
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
                created_at=records[-1].ts,
                reason=why,
                evidence=json.dumps(evidence, sort_keys=True),
            )
        )
        if policy.count == 0:
            return self._complete(
                conn, catalog, spec, name, version, env, actor, records, f"{env} needs no approval"
            )
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

    def _log(self, conn, records: list[AuditRecord], catalog: TenantCatalog, name: str, **kw):
        records.append(self.store.append(conn, tenant=catalog.tenant.name, model=name, **kw))

    def champion_in(self, conn, name: str) -> int | None:
        row = self.store.champion(conn, name)
        return row[0] if row else None

    def _complete(self, conn, catalog, spec, name, version, env, actor, records, why) -> Outcome:
        t = self.store.requests
        conn.execute(
            t.update()
            .where(t.c.model == name, t.c.version == version, t.c.environment == env)
            .values(status="approved")
        )
        client = self.mlflow.client()
        if env == "staging":
            client.set_registered_model_alias(name, "challenger", str(version))
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
                conn,
                catalog,
                spec,
                name,
                version,
                "production",
                actor,
                request["reason"],
                json.loads(request["evidence"]),
                records,
            )
        return self._make_champion(conn, catalog, name, version, actor, why, records)

    def _make_champion(self, conn, catalog, name, version, actor, why, records) -> Outcome:
        row = self.store.champion(conn, name)
        expected = row[0] if row else None
        if expected == version:
            raise rbac.Refused("already-champion", f"{name} v{version} is already champion")
        if not self.store.set_champion(conn, name, version, expected, expected):
            raise rbac.Refused(
                "concurrent-change",
                f"the champion of {name} changed while promoting v{version}; retry",
            )
        client = self.mlflow.client()
        client.set_registered_model_alias(name, "champion", str(version))
        if expected is not None:
            client.set_registered_model_alias(name, "previous", str(expected))
        challenger = self.mlflow.version_by_alias(name, "challenger")
        if challenger is not None and int(challenger.version) == version:
            client.delete_registered_model_alias(name, "challenger")
        manifest = self._deploy(catalog, name, version)
        self._log(
            conn,
            records,
            catalog,
            name,
            actor=actor,
            action="promote",
            outcome="champion",
            version=version,
            environment="production",
            reason=why,
            evidence={"previous_champion": expected, "manifest": manifest},
        )
        return Outcome(f"{name} v{version} is champion (previous: {expected})", records, version)

    def _deploy(self, catalog: TenantCatalog, name: str, version: int) -> str | None:
        if self.deploy_dir is None:
            return None
        from platform_assets.governance.deploy import write_inferenceservice

        uri = self.mlflow.client().get_model_version_download_uri(name, str(version))
        return str(write_inferenceservice(catalog.tenant, name, version, uri, self.deploy_dir))

    def approve(self, name: str, version: int, actor: str, comment: str = "") -> Outcome:
        def body(conn, catalog: TenantCatalog, records: list[AuditRecord]) -> Outcome:
            _, spec = self.locate(name)
            request = self._pending(conn, name, version, "approve")
            env = request["environment"]
            role = rbac.authorize(
                actor,
                catalog,
                json.loads(request["roles"]),
                f"approve {env} for",
                self.catalogs,
                self.admins,
            )
            rbac.four_eyes(actor, request["launched_by"], name, version)
            given = self.store.approvers(conn, name, version, env)
            if actor in given:
                raise rbac.Refused(
                    "one-approval-per-person", f"{actor} already approved {name} v{version}"
                )
            conn.execute(
                self.store.approvals.insert().values(
                    model=name,
                    version=version,
                    environment=env,
                    actor=actor,
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
                evidence={"role": role, "approvals": [*given, actor]},
            )
            if count < request["required"]:
                return Outcome(
                    f"{name} v{version}: {count} of {request['required']} {env} approvals",
                    records,
                    self.champion_in(conn, name),
                )
            return self._complete(
                conn,
                catalog,
                spec,
                name,
                version,
                env,
                actor,
                records,
                f"approved by {', '.join([*given, actor])}",
            )

        return self._run(actor, "approve", name, version, body)

    def _pending(self, conn, name: str, version: int, action: str) -> dict:
        for env in ENV_ALIAS:
            request = self.store.request(conn, name, version, env)
            if request is not None and request["status"] == "pending":
                return request
        raise rbac.Refused(
            "no-pending-request", f"{name} v{version} has no pending request to {action}"
        )

    def reject(self, name: str, version: int, actor: str, reason: str) -> Outcome:
        def body(conn, catalog: TenantCatalog, records: list[AuditRecord]) -> Outcome:
            request = self._pending(conn, name, version, "reject")
            env = request["environment"]
            rbac.authorize(
                actor, catalog, json.loads(request["roles"]), "reject", self.catalogs, self.admins
            )
            t = self.store.requests
            conn.execute(
                t.update()
                .where(t.c.model == name, t.c.version == version, t.c.environment == env)
                .values(status="rejected", reason=reason)
            )
            client = self.mlflow.client()
            client.set_model_version_tag(name, str(version), "mlplat.rejected_reason", reason)
            challenger = self.mlflow.version_by_alias(name, "challenger")
            if challenger is not None and int(challenger.version) == version:
                client.delete_registered_model_alias(name, "challenger")
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

    def rollback(self, name: str, actor: str, reason: str) -> Outcome:
        """Move `champion` back to `previous`; the rolled-back version keeps no alias."""

        def body(conn, catalog: TenantCatalog, records: list[AuditRecord]) -> Outcome:
            rbac.authorize(actor, catalog, OPERATOR_ROLES, "roll back", self.catalogs, self.admins)
            row = self.store.champion(conn, name)
            if row is None or row[1] is None:
                raise rbac.Refused("no-previous-champion", f"{name} has no previous champion")
            current, previous = row
            if not self.store.set_champion(conn, name, previous, current, None):
                raise rbac.Refused("concurrent-change", f"the champion of {name} changed; retry")
            client = self.mlflow.client()
            client.set_registered_model_alias(name, "champion", str(previous))
            client.delete_registered_model_alias(name, "previous")
            manifest = self._deploy(catalog, name, previous)
            self._log(
                conn,
                records,
                catalog,
                name,
                actor=actor,
                action="rollback",
                outcome="champion",
                version=previous,
                environment="production",
                reason=reason,
                evidence={"rolled_back": current, "manifest": manifest},
            )
            return Outcome(
                f"{name}: champion rolled back from v{current} to v{previous}", records, previous
            )

        return self._run(actor, "rollback", name, None, body)

    # --- Dagster events -----------------------------------------------------------------------

    def _observe(self, catalog: TenantCatalog, name: str, record: AuditRecord) -> None:
        """Each audit record also lands on the model asset, so the UI shows its history."""
        if self.emit is None:
            return
        model = name.partition(".")[2]
        self.emit(
            dg.AssetObservation(
                asset_key=dg.AssetKey([catalog.tenant.name, "models", model]),
                metadata={
                    "event": f"{record.action}:{record.outcome}",
                    "registered_model": name,
                    "version": record.version if record.version is not None else 0,
                    "environment": record.environment,
                    "actor": record.actor,
                    "reason": record.reason,
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
    from platform_assets.execution.env import data_root

    return Governance(
        open_store(), mlflow, instance=instance, emit=emit, deploy_dir=data_root() / "deploy"
    )
