"""Budgets: warning at warn_at, refusal at 100% unless overridden, alerts to a webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from platform_assets.cost.budget import budget_status, filter_run_requests, over_budget_skip
from platform_assets.cost.sensors import budget_sensor
from platform_assets.resources.pricing import PricingResource
from tests.cost.conftest import grant_override, metered_asset, record_step


def test_levels_follow_the_platform_budget(instance, limits):
    budget = limits["payments"].budget.monthly_usd
    assert budget_status(instance, "payments").level == "ok"
    record_step(instance, "payments", budget * 0.85)
    status = budget_status(instance, "payments")
    assert (status.level, status.blocked) == ("warn", False)
    assert "above the 80% warning threshold" in status.message
    record_step(instance, "payments", budget * 0.2)
    status = budget_status(instance, "payments")
    assert (status.level, status.blocked) == ("over", True)
    assert status.message.startswith("tenant 'payments' has spent $")
    assert f"of its ${budget:,.2f} monthly budget" in status.message
    assert "new runs are not launched" in status.message
    # Other tenants are not affected by payments' spend.
    assert budget_status(instance, "growth").level == "ok"


def test_override_keeps_runs_going(instance, limits, monkeypatch, tmp_path):
    grant_override(monkeypatch, tmp_path / "limits.yaml", "payments")
    record_step(instance, "payments", limits["payments"].budget.monthly_usd * 2)
    status = budget_status(instance, "payments")
    assert (status.level, status.blocked) == ("over", False)
    assert "runs continue because limits/limits.yaml sets budget.override" in status.message


def test_a_sensor_tick_of_an_over_budget_tenant_skips_with_the_budget_message(
    instance, limits, monkeypatch, tmp_path
):
    """What a sensor that launches a tenant's runs asks first (automation runs are refused by
    the run coordinator instead: tests/test_daemon.py)."""
    assert over_budget_skip(instance, "growth") is None
    record_step(instance, "growth", limits["growth"].budget.monthly_usd + 1)
    result = over_budget_skip(instance, "growth")
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == budget_status(instance, "growth").message
    assert "'growth'" in result.skip_message and "monthly budget" in result.skip_message
    # Once the platform grants an override in limits.yaml, the tick launches.
    grant_override(monkeypatch, tmp_path / "limits.yaml", "growth")
    assert over_budget_skip(instance, "growth") is None


def test_other_sensors_drop_requests_of_blocked_tenants(instance, limits):
    record_step(instance, "ridehail", limits["ridehail"].budget.monthly_usd + 1)
    requests = [dg.RunRequest(tags={"tenant": t}) for t in ("ridehail", "payments")]
    kept, reasons = filter_run_requests(instance, requests)
    assert [r.tags["tenant"] for r in kept] == ["payments"]
    assert reasons == [budget_status(instance, "ridehail").message]


@pytest.mark.materialize
def test_manual_launch_of_over_budget_tenant_is_refused(instance, limits):
    record_step(instance, "payments", limits["payments"].budget.monthly_usd + 5)
    result = dg.materialize(
        [metered_asset("payments")],
        instance=instance,
        resources={"pricing": PricingResource()},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "tenant 'payments' has spent $" in message and "new runs are not launched" in message
    assert result.get_asset_materialization_events() == []


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    monkeypatch.setenv("MLPLAT_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    yield _Hook.received
    server.shutdown()
    server.server_close()


def test_budget_sensor_warns_once_per_level_and_posts_json(instance, limits, webhook):
    budget = limits["payments"].budget.monthly_usd
    with dg.build_sensor_context(instance=instance) as context:
        result = budget_sensor(context)
        assert result.skip_message == "every tenant is within its budget"
        record_step(instance, "payments", budget * 0.9)
        result = budget_sensor(context)
        assert "above the 80% warning threshold" in result.skip_message
        assert [p["level"] for p in webhook] == ["warn"]
        budget_sensor(context)  # same level again: no second alert
        assert len(webhook) == 1
        record_step(instance, "payments", budget * 0.2)
        budget_sensor(context)
    assert [(p["tenant"], p["level"], p["blocked"]) for p in webhook] == [
        ("payments", "warn", False),
        ("payments", "over", True),
    ]
    assert webhook[1]["text"] == budget_status(instance, "payments").message
    observed = instance.fetch_observations(dg.AssetKey(["payments", "cost"]), limit=10).records
    assert {r.asset_observation.metadata["budget/level"].value for r in observed} == {
        "warn",
        "over",
    }
