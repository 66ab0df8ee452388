"""`mlplat approve|reject|promote|rollback|audit`: the governance commands, mounted by the main CLI.

Who acts is the identity an OIDC ID token proves (`--token` / MLPLAT_ID_TOKEN, verified against
the identity provider's keys). `--as` / MLPLAT_USER is self-asserted: accepted only with
MLPLAT_ENV=local, and recorded as `unverified` in the audit trail.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

import typer

from platform_assets.governance import service
from platform_assets.governance.identity import IdentityRefused, cli_identity, unverified_claim
from platform_assets.governance.rbac import Refused
from platform_assets.governance.store import StateTampered
from platform_assets.governance.workflow import (
    MoveFailed,
    open_store,
)

app = typer.Typer(no_args_is_help=True, add_completion=False)
audit_app = typer.Typer(
    help="The tamper-evident audit trail of every governance action (and refused attempt).",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

Actor = Annotated[
    str,
    typer.Option(
        "--as",
        envvar="MLPLAT_USER",
        show_envvar=True,
        help="Who is acting, self-asserted: only with MLPLAT_ENV=local, recorded as unverified.",
    ),
]
Token = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="MLPLAT_ID_TOKEN",
        show_envvar=False,
        help="An OIDC ID token from the identity provider; proves who is acting.",
    ),
]
Model = Annotated[str, typer.Argument(help="Registered model name, '<tenant>.<model>'.")]
Version = Annotated[int, typer.Argument(help="MLflow model version.", min=1)]


def reflow(fn):
    """Join docstring lines into paragraphs: rich help keeps source line breaks otherwise."""
    fn.__doc__ = re.sub(r"(?<!\n)\n(?!\n)", " ", inspect.cleandoc(fn.__doc__ or ""))
    return fn


def _act(
    verb: str,
    model: str,
    version: int | None,
    claimed: str,
    token: str,
    action: Callable[[Any, Any], Any],
) -> None:
    """Run one governance action as the verified caller; a refusal exits 1 with the rule's
    message, an identity that cannot be established exits 2. An identity refused for what the
    caller presented (a token, --as, MLPLAT_USER) is recorded in the audit trail; a call that
    presented nothing is not (there is nothing to record but the attempt's absence)."""
    try:
        identity = cli_identity(claimed, token)
    except IdentityRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        if exc.rule != "no-identity":
            said = {"as": claimed} if claimed else {}
            if token:
                said["token"] = unverified_claim(token)
            gov = service.deployment_governance()
            try:
                gov.refuse_identity(
                    exc,
                    verb,
                    via="cli",
                    model=model,
                    version=version,
                    claimed=", ".join(f"{k}={v}" for k, v in said.items()),
                )
            finally:
                gov.close()
        raise typer.Exit(2) from exc
    try:
        outcome = action(service.deployment_governance(), identity)
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (StateTampered, MoveFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(outcome.message)
    if not identity.verified:
        typer.echo(f"  identity {identity.name} is unverified (--as/MLPLAT_USER, local only)")
    for record in outcome.records:
        typer.echo(f"  audit {record.name} {record.action}:{record.outcome} {record.hash[:12]}")


@app.command()
@reflow
def approve(
    model: Model,
    version: Version,
    actor: Actor = "",
    token: Token = "",
    comment: Annotated[str, typer.Option(help="Why you approve, for the audit trail.")] = "",
) -> None:
    """Approve a pending model version (staging first, then production).

    Needs a role the model's policy names for that environment (or platform admin), and you
    must not be the person who launched its training run (four eyes). When the last required
    production approval arrives, the version becomes `champion` and the old one `previous`.
    """
    _act(
        "approve",
        model,
        version,
        actor,
        token,
        lambda gov, who: gov.approve(model, version, who, comment),
    )


@app.command()
@reflow
def reject(
    model: Model,
    version: Version,
    reason: Annotated[str, typer.Option(help="Why, recorded in the audit trail and MLflow.")],
    actor: Actor = "",
    token: Token = "",
) -> None:
    """Reject a pending model version; it loses `challenger` and the reason is recorded."""
    _act(
        "reject",
        model,
        version,
        actor,
        token,
        lambda gov, who: gov.reject(model, version, who, reason),
    )


@app.command()
@reflow
def promote(
    model: Model,
    version: Version,
    actor: Actor = "",
    token: Token = "",
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
) -> None:
    """Submit a model version for promotion (what the promotion sensor does automatically).

    Checks its policy (thresholds, required checks on its training set and feature views,
    minimum improvement over the champion), aliases it `challenger` and opens approval
    requests; it becomes `champion` at once only if its policy needs no approvals.
    Needs role approver or admin in the model's tenant.
    """
    _act(
        "propose",
        model,
        version,
        actor,
        token,
        lambda gov, who: gov.propose(model, version, who, reason),
    )


@app.command()
@reflow
def rollback(
    model: Model,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
    actor: Actor = "",
    token: Token = "",
) -> None:
    """Move `champion` back to the `previous` version (role approver or admin)."""
    _act("rollback", model, None, actor, token, lambda gov, who: gov.rollback(model, who, reason))


@app.command()
@reflow
def pending(tenant: Annotated[str, typer.Option(help="Only this tenant.")] = "") -> None:
    """List versions waiting for approval."""
    rows = open_store().pending(tenant or None)
    for r in rows:
        typer.echo(
            f"{r['model']} v{r['version']} {r['environment']}: needs {r['required']} from "
            f"{'/'.join(json.loads(r['roles']))} (trained by {r['launched_by']}) - {r['reason']}"
        )
    if not rows:
        typer.echo("nothing pending")


def _evidence_summary(evidence: dict) -> str:
    parts = []
    if "rule" in evidence:
        parts.append(f"rule={evidence['rule']}")
    metrics = evidence.get("metrics") or {}
    parts += [
        f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k in ("roc_auc", "average_precision")
    ]
    checks = evidence.get("checks") or {}
    if checks:
        parts.append(f"checks {sum(bool(c['passed']) for c in checks.values())}/{len(checks)}")
    for key in ("dagster_run_id", "training_set_version", "previous_champion", "rolled_back"):
        if evidence.get(key) is not None:
            parts.append(f"{key}={str(evidence[key])[:12]}")
    if "role" in evidence:
        parts.append(f"as {evidence['role']}")
    return ", ".join(parts)


@audit_app.command("show")
@reflow
def audit_show(
    model: Annotated[str, typer.Option(help="Only this '<tenant>.<model>'.")] = "",
    tenant: Annotated[str, typer.Option(help="Only this tenant.")] = "",
    limit: Annotated[int, typer.Option(help="The newest N records.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Full records as JSON lines.")] = False,
) -> None:
    """List audit records: who did what, when, why, with the evidence (metrics, checks, Dagster
    run, MLflow version, training-set data version) and each record's hash."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    records = open_store().records(model or None, tenant or None, limit)
    if as_json:
        for r in records:
            typer.echo(json.dumps(asdict(r), sort_keys=True))
        return
    table = Table(title="mlplat audit trail")
    for col in ("#", "when (UTC)", "who", "action", "model", "version", "why", "evidence", "hash"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.name,
            r.ts[:19].replace("T", " "),
            r.actor if r.identity != "unverified" else f"{r.actor} (unverified)",
            f"{r.action}:{r.outcome}",
            r.model,
            f"v{r.version}" if r.version is not None else "",
            r.reason,
            _evidence_summary(r.evidence),
            r.hash[:12],
        )
    Console(width=200).print(table)


@audit_app.command("verify")
@reflow
def audit_verify() -> None:
    """Check every tenant's chain (HMAC under the audit key), compare it with the chain heads
    published in Dagster's event log and the head file, and check the champion, request and
    approval rows against the records that cover them; exit 1 naming the first bad record."""
    result = service.verification()
    for problem in result.problems:
        typer.echo(f"error: audit chain broken at {problem}", err=True)
    if result.problems:
        raise typer.Exit(1)
    chains = ", ".join(f"{t} {n}" for t, n in sorted(result.chains.items())) or "none"
    typer.echo(
        f"ok: {result.checked} audit records in {len(result.chains)} chains ({chains}), "
        "intact, matching the published heads and the state they cover"
    )
