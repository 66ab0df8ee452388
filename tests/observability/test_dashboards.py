"""The generated rules and dashboard: committed up to date, valid PromQL and rule files, and
referring only to metrics real scrapes serve (the exporter's, and `mlplat serve`'s metrics
port)."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from typer.testing import CliRunner

from platform_assets.cli.main import app
from platform_assets.composition.locations import tenant_assets
from platform_assets.observability import dashboards
from platform_assets.observability import series as S
from platform_assets.observability import serving as serving_metrics
from platform_assets.observability.exporter import PlatformState, Tenants, serve
from platform_assets.resources.deployment import resources_for
from platform_assets.services.stack import free_port
from platform_assets.serving.requestlog import RequestLog
from platform_assets.serving.spool import Spool


def _scrape(server, thread) -> str:
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode()
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def served(platform_home, instance) -> dict[str, str]:
    """{sample name: family type} real scrapes announce, on an empty instance with the demo
    tenants (families without samples still say their name and type): the exporter's, and the
    request log's metrics port of `mlplat serve`."""
    lake = resources_for("local")["lake"]
    state = PlatformState(instance, Tenants.load(tenant_assets), lake, lake_interval=0)
    text = _scrape(*serve(state, "127.0.0.1", free_port()))
    log = RequestLog(lake, Spool(platform_home / "spool", 1 << 20))
    try:
        models = [("ridehail", "driver_churn")]
        text += _scrape(*serving_metrics.serve(log.state, models, "127.0.0.1", free_port()))
    finally:
        log.close()
    names = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            names[family.name + suffix] = family.type
    return names


def test_committed_rules_and_dashboard_are_up_to_date():
    result = CliRunner().invoke(app, ["metrics", "write", "--check"])
    assert result.exit_code == 0, result.output
    for path, text in dashboards.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run `mlplat metrics write`"


def test_write_check_names_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "rules.yml"
    stale.write_text("groups: []\n")
    monkeypatch.setattr(dashboards, "rendered", lambda: {stale: "groups: [x]\n"})
    result = CliRunner().invoke(app, ["metrics", "write", "--check"])
    assert result.exit_code == 1
    assert f"out of date: {stale}: run `mlplat metrics write`" in result.output
    assert stale.read_text() == "groups: []\n"  # --check writes nothing


def test_the_exporter_and_the_serving_port_serve_every_declared_series(served):
    for series in (*S.ALL, *S.SERVE):
        for sample in series.samples:
            assert served.get(sample) == series.kind, sample


def test_dashboard_refers_only_to_served_metrics(served):
    board = json.loads(dashboards.DASHBOARD_FILE.read_text())
    queries = dashboards.dashboard_queries(board)
    assert len(queries) > 20
    referenced = set().union(*(dashboards.metric_names(q) for q in queries))
    assert referenced - set(served) == set()
    # Each row of the list is on the board.
    for series in (S.RUNS, S.RUN_QUEUE_WAIT, S.STEP_DURATION, S.FRESHNESS_LAG, S.CHECKS,
                   S.COST_MTD, S.BURN_RATE, S.SERVING_REQUESTS, S.SERVING_ERRORS,
                   S.SERVING_LATENCY):  # fmt: skip
        assert referenced & set(series.samples), series.name


def test_rules_file_is_a_valid_rule_file_on_served_metrics(served):
    document = yaml.safe_load(dashboards.RULES_FILE.read_text())
    rules = dashboards.RuleFile.model_validate(document)
    exprs = [r.expr for g in rules.groups for r in g.rules]
    referenced = set().union(*(dashboards.metric_names(e) for e in exprs))
    assert referenced - set(served) == set()
    # One pair of run-success alerts per demo tenant, thresholds from its YAML (target 0.95).
    [group] = [g for g in rules.groups if g.name == "mlplat-slo-run-success"]
    spent = {r.labels["tenant"]: r.expr for r in group.rules if r.alert.endswith("BudgetSpent")}
    assert set(spent) == {"growth", "payments", "ridehail"}
    assert spent["ridehail"].endswith("> 0.05")
    assert "[28d]" in spent["ridehail"]
    # A request-log row dropped pages at once, per model.
    [dropped] = [
        r for g in rules.groups for r in g.rules if r.alert == "MlplatRequestLogRowsDropped"
    ]
    assert dashboards.metric_names(dropped.expr) == {S.SERVING_LOG_DROPPED.samples[0]}
    assert dropped.for_ is None and dropped.labels == {"severity": "critical"}


def test_rules_follow_the_tenants_slos():
    rules = dashboards.run_success_rules({"acme": (0.99, 7 * 86400)})
    spent, fast = rules
    assert spent["expr"] == (
        '(sum(increase(mlplat_runs_total{tenant="acme",outcome="failure"}[7d])) / '
        'sum(increase(mlplat_runs_total{tenant="acme"}[7d]))) > 0.01'
    )
    assert "[6h]" in fast["expr"] and fast["expr"].endswith("> 0.06")


def test_a_rule_that_is_not_promql_is_refused():
    bad = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}
    with pytest.raises(ValidationError, match=r"not PromQL \(unclosed left parenthesis\)"):
        dashboards.RuleFile.model_validate(bad)


def test_a_rule_with_a_bad_duration_is_refused():
    bad = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 mins"}]}]}
    with pytest.raises(ValidationError, match=r"groups\.0\.rules\.0\.for"):
        dashboards.RuleFile.model_validate(bad)


def test_a_rule_without_alert_or_record_is_refused():
    bad = {"groups": [{"name": "g", "rules": [{"expr": "up"}]}]}
    with pytest.raises(ValidationError, match="set exactly one of 'alert' or 'record'"):
        dashboards.RuleFile.model_validate(bad)


def test_a_rule_file_with_an_unknown_field_is_refused():
    bad = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "fro": "5m"}]}]}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        dashboards.RuleFile.model_validate(bad)


def test_a_dashboard_query_that_is_not_promql_is_refused():
    with pytest.raises(ValueError, match=r"not PromQL .*: rate\(mlplat_runs_total\[5m\]"):
        dashboards.parse_promql("rate(mlplat_runs_total[5m]")
