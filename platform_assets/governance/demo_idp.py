"""A minimal OIDC identity provider for the demo and the tests: its own EC key, a JWKS document,
and signed ID tokens. The platform verifies these tokens exactly as it verifies a real IdP's.

Never a production IdP: it has no login, it signs whatever identity it is asked for.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from platform_assets.governance.identity import OidcSettings

ISSUER = "https://idp.mlplat.local"
AUDIENCE = "mlplat"


class LocalIdP:
    def __init__(self, root: Path, issuer: str = ISSUER, audience: str = AUDIENCE):
        from cryptography.hazmat.primitives.asymmetric import ec
        from jwt.algorithms import ECAlgorithm

        self.issuer, self.audience = issuer, audience
        self.kid = uuid.uuid4().hex[:16]
        self._key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="ES256")
        root.mkdir(parents=True, exist_ok=True)
        self.jwks_path = root / f"jwks-{self.kid}.json"
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}))

    @property
    def settings(self) -> OidcSettings:
        return OidcSettings(self.issuer, self.audience, self.jwks_path.resolve().as_uri())

    def env(self) -> dict[str, str]:
        """The variables that point the platform at this IdP."""
        s = self.settings
        return {
            "MLPLAT_OIDC_ISSUER": s.issuer,
            "MLPLAT_OIDC_AUDIENCE": s.audience,
            "MLPLAT_OIDC_JWKS_URL": s.jwks_url,
        }

    def issue(self, email: str, ttl: int = 600, **claims) -> str:
        import jwt

        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": email,
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + ttl,
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm="ES256", headers={"kid": self.kid})
