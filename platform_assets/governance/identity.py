"""Who is acting, established from a verified credential, never from what the caller says.

Sources, by where they are trusted:
- `oidc`: an OIDC ID token (JWT) checked with PyJWT against the identity provider's keys (JWKS):
  signature, issuer, audience, expiry. The CLI takes it from `--token` / `MLPLAT_ID_TOKEN`.
- `proxy`: the identity header of the authenticating proxy in front of the web UI (oauth2-proxy
  style), believed only from the proxy addresses in MLPLAT_TRUSTED_PROXIES. The UI gateway
  (`webapp.py`) turns it into run tags with a proof signed by the platform.
- `platform`: the platform's own identities (the promotion sensor), proven by an HMAC the
  platform signs; no caller or job config can claim one.
- `unverified`: `--as` / `MLPLAT_USER` / `acting_as`, accepted only with MLPLAT_ENV=local and
  labelled as such in every audit record.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from platform_assets.env import deployment
from platform_assets.governance.rbac import Refused
from platform_assets.governance.store import canonical_json
from platform_assets.tenancy.specs import RESERVED_IDENTITY_PREFIX, is_reserved_identity

RESERVED_PREFIX = RESERVED_IDENTITY_PREFIX  # the platform's identities and its tags
SENSOR_IDENTITY = "mlplat/promotion_sensor"
RECONCILER_IDENTITY = "mlplat/reconciler"
LAUNCHED_BY_TAG = "mlplat/launched_by"
IDENTITY_SOURCE_TAG = "mlplat/identity"
PROOF_TAG = "mlplat/identity_proof"
PARENT_RUN_TAG = "dagster/parent_run_id"  # Dagster's, on every re-execution
DEFAULT_PROXY_HEADER = "X-Forwarded-Email"
# RSA and EC signatures only: an HMAC-signed ("HS256") token would be signed with a shared
# secret, and "none" is no signature at all.
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


@dataclass(frozen=True)
class Identity:
    name: str
    source: str  # oidc | proxy | platform | unverified

    @property
    def verified(self) -> bool:
        return self.source != "unverified"


# The promotion sensor as the workflow sees it: it submits candidates without an operator role.
SENSOR = Identity(SENSOR_IDENTITY, "platform")


class IdentityRefused(Refused):
    """A credential or claim that does not establish who is acting."""


def claimable(name: str, where: str) -> str:
    """`name` if a caller may claim it; reserved platform identities never are."""
    if is_reserved_identity(name):
        raise IdentityRefused(
            "reserved-identity",
            f"{name!r} in {where} is reserved for the platform's own sensors and cannot be claimed",
        )
    return name


def as_identity(actor: Identity | str) -> Identity:
    """A bare string is a self-asserted identity: never a reserved one, always unverified."""
    if isinstance(actor, Identity):
        return actor
    return Identity(claimable(actor, "the caller's identity"), "unverified")


# --- OIDC ID tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    jwks_url: str  # https://... or file://... (a JWKS document)
    claim: str = "email"

    @classmethod
    def from_env(cls) -> OidcSettings | None:
        issuer = os.environ.get("MLPLAT_OIDC_ISSUER")
        if not issuer:
            return None
        missing = [
            v for v in ("MLPLAT_OIDC_AUDIENCE", "MLPLAT_OIDC_JWKS_URL") if not os.environ.get(v)
        ]
        if missing:
            raise IdentityRefused(
                "oidc-config", f"MLPLAT_OIDC_ISSUER is set but {', '.join(missing)} is not"
            )
        return cls(
            issuer,
            os.environ["MLPLAT_OIDC_AUDIENCE"],
            os.environ["MLPLAT_OIDC_JWKS_URL"],
            os.environ.get("MLPLAT_OIDC_IDENTITY_CLAIM", "email"),
        )


@cache
def _jwks_client(url: str):
    import jwt

    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300)


def _signing_key(url: str, token: str):
    """The IdP key that signed `token`: from its JWKS endpoint, or a JWKS file (file://) for
    an IdP whose keys are distributed as a file (the demo's, air-gapped deployments)."""
    import jwt

    if not url.startswith("file://"):
        return _jwks_client(url).get_signing_key_from_jwt(token).key
    from urllib.parse import unquote, urlparse

    kid = jwt.get_unverified_header(token).get("kid")
    jwks = jwt.PyJWKSet.from_json(open(unquote(urlparse(url).path)).read())
    for key in jwks.keys:
        if key.key_id == kid:
            return key.key
    raise jwt.PyJWKClientError(f'Unable to find a signing key that matches: "{kid}"')


def verify_token(token: str, settings: OidcSettings | None) -> Identity:
    """The identity an ID token proves; refused naming what failed (signature, issuer, ...)."""
    import jwt

    if settings is None:
        raise IdentityRefused(
            "invalid-token",
            "an ID token was given but no identity provider is configured (MLPLAT_OIDC_ISSUER, "
            "MLPLAT_OIDC_AUDIENCE, MLPLAT_OIDC_JWKS_URL)",
        )
    try:
        claims = jwt.decode(
            token,
            _signing_key(settings.jwks_url, token),
            algorithms=ALGORITHMS,
            audience=settings.audience,
            issuer=settings.issuer,
            options={"require": ["exp", "iat", "iss", "aud"]},
            leeway=30,
        )
    except jwt.PyJWTError as exc:
        raise IdentityRefused("invalid-token", f"ID token rejected: {exc}") from exc
    name = claims.get(settings.claim)
    if not isinstance(name, str) or not name:
        raise IdentityRefused("invalid-token", f"ID token has no {settings.claim!r} claim")
    if settings.claim == "email" and claims.get("email_verified") is False:
        raise IdentityRefused("invalid-token", f"ID token's email {name} is not verified")
    return Identity(claimable(name, "the ID token"), "oidc")


def unverified_claim(token: str, claim: str = "email") -> str:
    """What a token that failed verification says about its bearer, for the audit record of the
    refusal only: read without checking anything, never believed. Empty when unreadable."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    value = claims.get(claim) if isinstance(claims, dict) else None
    return value[:200] if isinstance(value, str) else ""


def cli_identity(claimed: str, token: str) -> Identity:
    """Who runs a CLI command: a verified ID token, or `--as`/MLPLAT_USER only locally."""
    if token:
        identity = verify_token(token, OidcSettings.from_env())
        if claimed and claimed != identity.name:
            raise IdentityRefused(
                "identity-mismatch",
                f"--as/MLPLAT_USER says {claimed} but the ID token is {identity.name}",
            )
        return identity
    if not claimed:
        raise IdentityRefused(
            "no-identity",
            "no identity: pass an ID token (--token or MLPLAT_ID_TOKEN)"
            + (" or, locally, --as <identity> / MLPLAT_USER" if deployment() == "local" else ""),
        )
    if deployment() != "local":
        raise IdentityRefused(
            "unverified-identity",
            f"--as/MLPLAT_USER ({claimed}) is accepted only with MLPLAT_ENV=local; with "
            f"MLPLAT_ENV={deployment()} pass an OIDC ID token (--token or MLPLAT_ID_TOKEN)",
        )
    return Identity(claimable(claimed, "--as/MLPLAT_USER"), "unverified")


# --- the authenticating proxy ----------------------------------------------------------------


@dataclass(frozen=True)
class ProxySettings:
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    header: str = DEFAULT_PROXY_HEADER

    @classmethod
    def parse(cls, trusted: str, header: str = DEFAULT_PROXY_HEADER) -> ProxySettings:
        """`trusted`: comma-separated addresses or networks (CIDR) of the proxies."""
        nets = []
        for part in filter(None, (p.strip() for p in trusted.split(","))):
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise IdentityRefused("proxy-config", f"MLPLAT_TRUSTED_PROXIES: {exc}") from exc
        return cls(tuple(nets), header)

    @classmethod
    def from_env(cls) -> ProxySettings:
        return cls.parse(
            os.environ.get("MLPLAT_TRUSTED_PROXIES", ""),
            os.environ.get("MLPLAT_PROXY_IDENTITY_HEADER", DEFAULT_PROXY_HEADER),
        )

    def is_trusted(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def proxy_identity(
    headers: Mapping[str, str], client_host: str | None, settings: ProxySettings
) -> Identity | None:
    """The proxy's identity header, if the request came from a trusted proxy; None if absent."""
    value = header_value(headers, settings.header)
    if value is None:
        return None
    if not settings.is_trusted(client_host):
        raise IdentityRefused(
            "untrusted-proxy",
            f"identity header {settings.header} came from {client_host}, which is not a trusted "
            "proxy (MLPLAT_TRUSTED_PROXIES)",
        )
    return Identity(claimable(value.strip(), f"header {settings.header}"), "proxy")


# --- proofs the platform signs ---------------------------------------------------------------


def _proof(keys, *parts: str) -> str:
    return hmac.new(keys.proof_key(), "\x1f".join(parts).encode(), "sha256").hexdigest()


def _launch(job: str, run_config: Mapping[str, Any], parent_run_id: str) -> tuple[str, ...]:
    """What a launch proof binds besides the identity: the job and run config of a new run; the
    parent of a re-execution. Dagster copies a parent's tags onto its re-executions, proof
    included, and that proof (job and config) never verifies on a run with a parent: whoever
    re-executes must be signed for it, or the run has no verified launcher."""
    if parent_run_id:
        return ("reexecution", parent_run_id)
    return (job, canonical_json(run_config))


def launch_tags(
    keys, identity: Identity, job: str, run_config: Mapping[str, Any], parent_run_id: str = ""
) -> dict:
    """The run tags the UI gateway sets on a launch: who, how verified, and a proof binding
    both to this job and run config (a re-execution: to its parent run), so the tags cannot be
    copied onto another launch."""
    bound = _launch(job, run_config, parent_run_id)
    return {
        LAUNCHED_BY_TAG: identity.name,
        IDENTITY_SOURCE_TAG: identity.source,
        PROOF_TAG: _proof(keys, identity.name, identity.source, *bound),
    }


def _signed(keys, tags: Mapping[str, str], bound: tuple[str, ...]) -> Identity | None:
    """The launcher the run's tags name, if the gateway's proof over `bound` checks out."""
    name = tags.get(LAUNCHED_BY_TAG)
    source, proof = tags.get(IDENTITY_SOURCE_TAG, ""), tags.get(PROOF_TAG, "")
    if name and proof and source in ("oidc", "proxy"):
        if hmac.compare_digest(proof, _proof(keys, name, source, *bound)):
            return Identity(name, source)
    return None


def run_launcher(
    keys,
    tags: Mapping[str, str],
    job: str,
    run_config: Mapping[str, Any],
    parent_run_id: str = "",
):
    """Who launched a Dagster run, from its record (`parent_run_id`: the run's, if it is a
    re-execution): verified if its proof checks out; in local the bare tag is accepted as
    unverified. None when no person launched it (automation)."""
    name = tags.get(LAUNCHED_BY_TAG)
    if not name:
        return None
    parent = parent_run_id or tags.get(PARENT_RUN_TAG, "")
    launcher = _signed(keys, tags, _launch(job, run_config, parent))
    if launcher is None and deployment() == "local":
        return Identity(name, "unverified")
    return launcher


def trained_by(
    keys, tags: Mapping[str, str], job: str, run_config: Mapping[str, Any], parent_run_id: str
):
    """Whose work a run is, for the four-eyes rule: its verified launcher or, for a re-execution
    nobody signed (the daemon's retry of a failed run), the launcher of the launch it repeats,
    whose tags and config Dagster copied onto it. A retry never frees its launcher to approve."""
    launcher = run_launcher(keys, tags, job, run_config, parent_run_id)
    if launcher is None and (parent_run_id or tags.get(PARENT_RUN_TAG)):
        return _signed(keys, tags, _launch(job, run_config, ""))
    return launcher


def sensor_proof(keys, model: str, version: int) -> str:
    return _proof(keys, SENSOR_IDENTITY, model, str(version))


def check_sensor_proof(keys, proof: str, model: str, version: int) -> bool:
    return bool(proof) and hmac.compare_digest(proof, sensor_proof(keys, model, version))


def judgement_proof(keys, asset: str, storage_id: int, outcome: str) -> str:
    """The promotion sensor's signature on what it recorded about one evaluation event: anyone
    may report an observation on an asset, only the sensor can sign this one."""
    return _proof(keys, SENSOR_IDENTITY, "judgement", asset, str(storage_id), outcome)


def check_judgement_proof(keys, proof: str, asset: str, storage_id: int, outcome: str) -> bool:
    expected = judgement_proof(keys, asset, storage_id, outcome)
    return bool(proof) and hmac.compare_digest(proof, expected)


def job_identity(
    keys,
    tags: Mapping[str, str],
    job: str,
    run_config: Mapping[str, Any],
    acting_as: str,
    proof: str = "",
    model: str = "",
    version: int = 0,
    parent_run_id: str = "",
) -> Identity:
    """Who acts in a governance job run: the promotion sensor (by its proof), the verified
    launcher (by the gateway's proof), or locally `acting_as` / the launch tag, unverified.
    A re-execution (`parent_run_id`) acts as whoever re-executed it, never as its parent's
    launcher, and never as the sensor."""
    if acting_as:
        claimable(acting_as, "the job config's acting_as")
    parent_run_id = parent_run_id or tags.get(PARENT_RUN_TAG, "")
    if proof and parent_run_id:
        raise IdentityRefused(
            "reserved-identity",
            f"this run re-executes run {parent_run_id}, which the promotion sensor launched; "
            "only the sensor acts as the sensor, in runs it launches itself",
        )
    if proof:
        if not check_sensor_proof(keys, proof, model, version):
            raise IdentityRefused(
                "reserved-identity",
                f"the sensor proof of this run does not match {model} v{version}; only the "
                "promotion sensor can act as it",
            )
        return Identity(SENSOR_IDENTITY, "platform")
    launcher = run_launcher(keys, tags, job, run_config, parent_run_id)
    if deployment() == "local":
        if acting_as:
            return Identity(acting_as, "unverified")
        if launcher is not None:
            return Identity(claimable(launcher.name, f"run tag {LAUNCHED_BY_TAG}"), launcher.source)
        raise IdentityRefused(
            "no-identity", f"no identity: set acting_as or the run tag {LAUNCHED_BY_TAG}"
        )
    if launcher is None or not launcher.verified:
        raise IdentityRefused(
            "unverified-identity",
            f"this run has no verified launcher (launch it through the platform's UI gateway); "
            f"with MLPLAT_ENV={deployment()} acting_as and bare run tags are not accepted",
        )
    if acting_as and acting_as != launcher.name:
        raise IdentityRefused(
            "identity-mismatch",
            f"acting_as says {acting_as} but the run was launched by {launcher.name}",
        )
    return launcher
