"""`mlplat approve|reject|promote|rollback|audit`: exit codes and messages people see."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from platform_assets.cli import governance as cli
from platform_assets.governance.identity import SENSOR_IDENTITY
from tests.governance.conftest import ADMIN, APPROVER, MODEL, OTHER_TENANT, SENSOR, VIEWER

runner = CliRunner()


@pytest.fixture
def sb(cli_sandbox):
    return cli_sandbox


def run(*args: str, env: dict | None = None):
    return runner.invoke(cli.app, list(args), env=env)


@pytest.mark.parametrize(
    ("actor", "rule"),
    [
        (VIEWER, "refused by rule role-required: vera@payments.example has role viewer"),
        (OTHER_TENANT, "refused by rule tenant-isolation: grace@growth.example belongs to"),
        (ADMIN, "refused by rule role-required: priya@payments.example has role admin"),
    ],
)
def test_refused_approvals_exit_non_zero_naming_the_rule(sb, actor, rule):
    v1 = sb.register(0.30)
    sb.governance().propose(MODEL, v1, SENSOR)
    result = run("approve", MODEL, str(v1), "--as", actor)
    assert result.exit_code == 1
    assert f"error: {rule}" in result.output


def test_four_eyes_from_the_cli(sb):
    v1 = sb.register(0.30, launched_by=APPROVER)
    sb.governance().propose(MODEL, v1, SENSOR)
    result = run("approve", MODEL, str(v1), env={"MLPLAT_USER": APPROVER})
    assert result.exit_code == 1
    assert "refused by rule four-eyes: paul@payments.example launched the training run" in (
        result.output
    )


def test_identity_is_required_and_platform_identities_are_reserved(sb):
    assert run("approve", MODEL, "1").exit_code == 2
    assert (
        "no identity: pass an ID token (--token or MLPLAT_ID_TOKEN) or, locally, --as "
        "<identity> / MLPLAT_USER" in run("approve", MODEL, "1").output
    )
    result = run("approve", MODEL, "1", "--as", SENSOR_IDENTITY)
    assert result.exit_code == 2
    assert (
        "refused by rule reserved-identity: 'mlplat/promotion_sensor' in --as/MLPLAT_USER is "
        "reserved" in result.output
    )


def test_approve_promote_rollback_and_audit(sb):
    v1 = sb.register(0.30)
    result = run("promote", MODEL, str(v1), "--as", APPROVER, "--reason", "first model")
    assert result.exit_code == 0, result.output
    assert "awaits 1 production approval(s)" in result.output
    assert f"{MODEL} v{v1} production" in run("pending").output
    result = run("approve", MODEL, str(v1), "--as", "pat@payments.example")
    assert result.exit_code == 0, result.output
    assert f"{MODEL} v{v1} is champion" in result.output
    v2 = sb.register(0.40)
    sb.governance().propose(MODEL, v2, SENSOR)
    result = run("reject", MODEL, str(v2), "--as", APPROVER, "--reason", "unexplained jump")
    assert result.exit_code == 0 and "rejected: unexplained jump" in result.output
    result = run("rollback", MODEL, "--as", ADMIN, "--reason", "drill")
    assert result.exit_code == 1
    assert "no-previous-champion" in result.output

    shown = run("audit", "show", "--model", MODEL)
    assert shown.exit_code == 0
    assert "promote:champion" in shown.output
    assert "average_precision=0.3000" in shown.output
    assert "checks 4/4" in " ".join(shown.output.split()) or "4/4" in shown.output
    assert "rule=no-previous-champion" in shown.output
    assert run("audit", "show", "--json").output.count('"hash"') == len(sb.store.records())

    verified = run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert f"ok: {len(sb.store.records())} audit records in 1 chains (payments " in verified.output

    with sb.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE gov_audit SET actor = 'mallory' WHERE seq = 5"))
    broken = run("audit", "verify")
    assert broken.exit_code == 1
    assert "error: audit chain broken at record payments#5: content does not match its HMAC" in (
        broken.output
    )


def test_audit_verify_detects_deleted_newest_and_all_records(sb):
    v1 = sb.register(0.30)
    assert run("promote", MODEL, str(v1), "--as", APPROVER).exit_code == 0
    count = len(sb.store.records())
    with sb.store.engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM gov_audit WHERE seq = {count}"))
    broken = run("audit", "verify")
    assert broken.exit_code == 1
    assert (
        f"error: audit chain broken at record payments#{count}: truncated: the head published "
        f"in the Dagster event log is record payments#{count} but the chain ends at "
        f"payments#{count - 1} (newest records deleted)"
    ) in " ".join(broken.output.split())
    with sb.store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM gov_audit"))
    gone = run("audit", "verify")
    assert gone.exit_code == 1
    assert "all records deleted: the head published in the Dagster event log" in " ".join(
        gone.output.split()
    )


def help_text(*args: str) -> str:
    """Help as plain words, without rich's box drawing and line wrapping."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", run(*args, "--help").output).split())


def test_help_explains_the_commands():
    top = help_text()
    for command in ("approve", "reject", "promote", "rollback", "audit"):
        assert command in top
    assert "must not be the person who launched its training run (four eyes)" in help_text(
        "approve"
    )
    assert "MLPLAT_USER" in help_text("approve")
    assert "only with MLPLAT_ENV=local, recorded as unverified" in help_text("approve")
    assert "OIDC ID token" in help_text("approve")
    assert "exit 1 naming the first bad record" in help_text("audit", "verify")


def test_demo_walk_refuses_once_then_approves_and_is_re_runnable(sb):
    from rich.console import Console

    from platform_assets.demo.approvals import walk

    v1 = sb.register(0.30)
    sb.governance().propose(MODEL, v1, SENSOR)
    lines = walk(Console())
    assert lines[0].startswith("identities: ID tokens issued by the demo's own IdP")
    assert lines[1].startswith(
        f"{MODEL} v{v1} production: vera@payments.example -> refused by rule role-required"
    )
    assert lines[2] == (
        f"{MODEL} v{v1} production: paul@payments.example approved -> "
        f"{MODEL} v{v1} is champion (previous: None)"
    )
    assert lines[-1].startswith("audit chains: ") and "intact" in lines[-1]
    approval = next(
        r for r in sb.store.records() if r.action == "approve" and r.outcome == "approved"
    )
    assert (approval.actor, approval.identity) == ("paul@payments.example", "oidc")
    again = walk(Console())
    assert again[1] == "no pending approval requests: nothing new to promote"


def test_unknown_model_is_refused(sb):
    result = run("approve", "payments.nope", "1", "--as", APPROVER)
    assert result.exit_code == 1
    assert "refused by rule unknown-model: no model 'payments.nope'" in result.output
