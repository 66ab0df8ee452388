"""The demo's approval step: one refused attempt, then the YAML's approvers approve each request.

Called by `mlplat demo` after the pipeline ran and the promotion sensor was evaluated once. The
demo is its own identity provider (`demo_idp.LocalIdP`, a key generated under the data root):
every person acts with an ID token it issues, verified exactly as a real IdP's would be. A
second run with identical models finds nothing pending (the sensor submitted nothing new).
"""

from __future__ import annotations

from typing import Any

from platform_assets.env import data_root
from platform_assets.governance import service
from platform_assets.governance.demo_idp import LocalIdP
from platform_assets.governance.identity import verify_token
from platform_assets.governance.rbac import Refused

DEMO_OUTSIDER = "mallory@example.com"


def _approvers(catalog, request: dict, already: list[str]) -> list[str]:
    import json

    roles = catalog.tenant.roles
    people = [p for role in json.loads(request["roles"]) for p in getattr(roles, role)]
    eligible = [p for p in dict.fromkeys(people) if p != request["launched_by"]]
    return [p for p in eligible if p not in already][: request["required"] - len(already)]


def walk(console: Any) -> list[str]:
    idp = LocalIdP(data_root() / "demo_idp")

    def signed_in(person: str):
        return verify_token(idp.issue(person), idp.settings)

    gov = service.deployment_governance()
    lines: list[str] = [
        f"identities: ID tokens issued by the demo's own IdP ({idp.issuer}, key "
        f"{idp.kid}) and verified against its JWKS"
    ]
    refused_once: set[str] = set()
    seen: set[tuple[str, int, str]] = set()
    while True:
        todo = [
            r
            for r in gov.store.pending()
            if (r["model"], r["version"], r["environment"]) not in seen
        ]
        if not todo:
            break
        for request in todo:
            name, version, env = request["model"], request["version"], request["environment"]
            seen.add((name, version, env))
            catalog = gov.catalogs[request["tenant"]]
            if name not in refused_once:
                refused_once.add(name)
                outsider = (catalog.tenant.roles.viewer or [DEMO_OUTSIDER])[0]
                try:
                    gov.approve(
                        name, version, signed_in(outsider), "demo: someone without the role"
                    )
                    lines.append(f"{name} v{version}: {outsider} approved (unexpected)")
                except Refused as exc:
                    lines.append(f"{name} v{version} {env}: {outsider} -> {exc}")
            with gov.store.engine.connect() as conn:
                already = gov.store.approvers(conn, name, version, env)
            people = _approvers(catalog, request, already)
            if len(people) < request["required"] - len(already):
                lines.append(
                    f"{name} v{version} {env}: the tenant YAML lists too few eligible approvers"
                )
                continue
            for person in people:
                outcome = gov.approve(name, version, signed_in(person), "demo approval")
                lines.append(f"{name} v{version} {env}: {person} approved -> {outcome.message}")
    if len(lines) == 1:
        lines.append("no pending approval requests: nothing new to promote")
    gov.close()
    result = service.verification()
    lines.append(
        f"audit chains: {result.checked} records in {len(result.chains)} chains, "
        + (
            f"BROKEN at {result.first}"
            if result.first
            else "intact (checked against the heads published in Dagster)"
        )
    )
    return lines
