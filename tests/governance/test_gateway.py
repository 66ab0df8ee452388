"""The UI gateway in front of the webserver: identity from trusted proxies or ID tokens only, and
run launches signed with the verified launcher (what the governance jobs then believe)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from platform_assets.governance.demo_idp import LocalIdP
from platform_assets.governance.gateway import IdentityGateway
from platform_assets.governance.identity import (
    Identity,
    IdentityRefused,
    ProxySettings,
    job_identity,
)
from platform_assets.governance.keys import AuditKeys

KEYS = AuditKeys.from_secrets(["gateway test key 0123456789"])
PROXY = ProxySettings.parse("10.0.0.0/24")
CONFIG = {"ops": {"roll_back": {"config": {"registered_model": "payments.m", "reason": "x"}}}}
LAUNCH = {
    "query": "mutation LaunchRun($executionParams: ExecutionParams!) { "
    "launchRun(executionParams: $executionParams) { __typename } }",
    "variables": {
        "executionParams": {
            "selector": {"jobName": "rollback_model", "repositoryName": "__repository__"},
            "runConfigData": CONFIG,
            "executionMetadata": {
                "tags": [
                    {"key": "mlplat/launched_by", "value": "raj@ridehail.example"},
                    {"key": "team", "value": "ridehail"},
                ]
            },
        }
    },
}


class Recorder:
    """The webserver's place: records what reaches it."""

    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def idp(tmp_path) -> LocalIdP:
    return LocalIdP(tmp_path / "idp")


def client(idp, host: str, refusals: list | None = None) -> tuple[TestClient, Recorder]:
    recorder = Recorder()
    record = (lambda *refusal: refusals.append(refusal)) if refusals is not None else None
    gateway = IdentityGateway(recorder, KEYS, PROXY, idp.settings, record)
    return TestClient(gateway, client=(host, 40000)), recorder


def test_the_proxy_header_from_an_untrusted_address_is_refused_and_recorded(idp):
    refusals = []
    http, recorder = client(idp, "192.168.1.5", refusals)
    response = http.post("/graphql", json=LAUNCH, headers={"X-Forwarded-Email": "raj@x.example"})
    assert response.status_code == 403
    assert response.text == (
        "refused by rule untrusted-proxy: identity header X-Forwarded-Email came from "
        "192.168.1.5, which is not a trusted proxy (MLPLAT_TRUSTED_PROXIES)"
    )
    assert recorder.bodies == []
    ((exc, claimed, details),) = refusals
    assert (exc.rule, str(exc)) == ("untrusted-proxy", response.text)
    assert claimed == "header X-Forwarded-Email=raj@x.example"
    assert details == {"client": "192.168.1.5", "path": "/graphql", "method": "POST"}


def test_a_reserved_identity_from_the_trusted_proxy_is_refused_and_recorded(idp):
    refusals = []
    http, _ = client(idp, "10.0.0.7", refusals)
    response = http.get("/", headers={"X-Forwarded-Email": "mlplat/promotion_sensor"})
    assert response.status_code == 403
    assert "refused by rule reserved-identity: 'mlplat/promotion_sensor' in header" in (
        response.text
    )
    assert [(e.rule, c) for e, c, _ in refusals] == [
        ("reserved-identity", "header X-Forwarded-Email=mlplat/promotion_sensor")
    ]


def test_no_credential_at_all_is_refused_without_a_record(idp):
    refusals = []
    http, _ = client(idp, "10.0.0.7", refusals)
    assert http.get("/").status_code == 401 and refusals == []


def test_mutations_outside_a_json_body_are_refused(idp):
    http, recorder = client(idp, "10.0.0.7")
    who = {"X-Forwarded-Email": "rita@ridehail.example"}
    query = "mutation { launchRun(executionParams: {}) { __typename } }"
    for response in (
        http.get("/graphql", params={"query": query}, headers=who),
        http.post(
            "/graphql", content=query, headers={**who, "Content-Type": "application/graphql"}
        ),
        http.post("/graphql?query=" + query, headers=who),
    ):
        assert response.status_code == 400
        assert response.text.startswith("GraphQL mutations are accepted only as a POST with an")
    assert recorder.bodies == []
    assert http.get("/graphql", params={"query": "{ version }"}, headers=who).status_code == 200


def test_no_identity_is_401(idp):
    http, _ = client(idp, "10.0.0.7")
    response = http.get("/")
    assert response.status_code == 401 and "no verified identity" in response.text


def test_a_launch_through_the_trusted_proxy_is_signed_with_the_verified_launcher(idp):
    http, recorder = client(idp, "10.0.0.7")
    response = http.post(
        "/graphql", json=LAUNCH, headers={"X-Forwarded-Email": "rita@ridehail.example"}
    )
    assert response.status_code == 200
    sent = json.loads(recorder.bodies[0])["variables"]["executionParams"]["executionMetadata"]
    tags = {t["key"]: t["value"] for t in sent["tags"]}
    assert tags["mlplat/launched_by"] == "rita@ridehail.example"  # the client's claim is gone
    assert tags["mlplat/identity"] == "proxy" and tags["team"] == "ridehail"
    assert job_identity(KEYS, tags, "rollback_model", CONFIG, "") == Identity(
        "rita@ridehail.example", "proxy"
    )


def test_a_bearer_id_token_is_verified(idp):
    http, recorder = client(idp, "172.16.0.9")
    token = idp.issue("paul@payments.example")
    ok = http.post("/graphql", json=LAUNCH, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    sent = json.loads(recorder.bodies[0])["variables"]["executionParams"]["executionMetadata"]
    assert {"key": "mlplat/identity", "value": "oidc"} in sent["tags"]
    expired = idp.issue("paul@payments.example", ttl=-120)
    refused = http.post("/graphql", json=LAUNCH, headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 403
    assert refused.text == "refused by rule invalid-token: ID token rejected: Signature has expired"


def test_a_token_failing_verification_is_recorded_with_its_unverified_claim(idp):
    refusals = []
    http, _ = client(idp, "172.16.0.9", refusals)
    expired = idp.issue("paul@payments.example", ttl=-120)
    http.get("/", headers={"Authorization": f"Bearer {expired}"})
    assert [(e.rule, c) for e, c, _ in refusals] == [
        ("invalid-token", "token=paul@payments.example")
    ]


def test_launch_params_are_signed_whatever_the_variable_is_called_and_never_inline(idp):
    """Found against the real webserver: a variable not named executionParams went unsigned."""
    http, recorder = client(idp, "10.0.0.7")
    who = {"X-Forwarded-Email": "rita@ridehail.example"}
    renamed = {
        "query": "mutation($p: ExecutionParams!) { go: launchRun(executionParams: $p) { ok } }",
        "variables": {"p": LAUNCH["variables"]["executionParams"]},
    }
    assert http.post("/graphql", json=renamed, headers=who).status_code == 200
    sent = json.loads(recorder.bodies[0])["variables"]["p"]["executionMetadata"]["tags"]
    assert {"key": "mlplat/launched_by", "value": "rita@ridehail.example"} in sent
    inline = {"query": 'mutation { launchRun(executionParams: {selector: {jobName: "j"}}) { ok } }'}
    refused = http.post("/graphql", json=inline, headers=who)
    assert refused.status_code == 400
    assert refused.text == (
        "launchRun: pass executionParams as a GraphQL variable, not inline, so the gateway can "
        "sign the launch with the verified launcher"
    )
    backfill = {
        "query": "mutation($b: LaunchBackfillParams!) { "
        "launchPartitionBackfill(backfillParams: $b) { ok } }",
        "variables": {"b": {"tags": [{"key": "mlplat/launched_by", "value": "raj@x.example"}]}},
    }
    assert http.post("/graphql", json=backfill, headers=who).status_code == 200
    assert json.loads(recorder.bodies[1])["variables"]["b"]["tags"] == []


REEXECUTE = {
    "query": "mutation($r: ReexecutionParams!) { "
    "launchPipelineReexecution(reexecutionParams: $r) { __typename } }",
    "variables": {
        "r": {
            "parentRunId": "parent-run-1",
            "strategy": "ALL_STEPS",
            "extraTags": [{"key": "mlplat/launched_by", "value": "raj@ridehail.example"}],
        }
    },
}


def test_a_reexecution_is_signed_for_whoever_reexecutes_it(monkeypatch, idp):
    """Dagster copies the parent's tags, proof included, onto a re-execution: the gateway's
    extra tags (which win over the copied ones) name the re-executor, bound to the parent."""
    monkeypatch.setenv("MLPLAT_ENV", "k8s")
    http, recorder = client(idp, "10.0.0.7")
    who = {"X-Forwarded-Email": "rita@ridehail.example"}
    assert http.post("/graphql", json=REEXECUTE, headers=who).status_code == 200
    sent = json.loads(recorder.bodies[0])["variables"]["r"]["extraTags"]
    tags = {t["key"]: t["value"] for t in sent}
    assert tags["mlplat/launched_by"] == "rita@ridehail.example"  # the client's claim is gone
    child = {**tags, "dagster/parent_run_id": "parent-run-1"}
    assert job_identity(KEYS, child, "rollback_model", CONFIG, "") == Identity(
        "rita@ridehail.example", "proxy"
    )
    # Bound to that parent: on a re-execution of another run the same tags prove nothing.
    other = {**tags, "dagster/parent_run_id": "parent-run-2"}
    with pytest.raises(IdentityRefused, match="unverified-identity"):
        job_identity(KEYS, other, "rollback_model", CONFIG, "")
