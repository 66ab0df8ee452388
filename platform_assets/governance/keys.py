"""The platform's governance secrets, which live outside the platform database.

One secret signs the audit chain (HMAC-SHA256) and, under a derived key, the platform's own
identity proofs (the promotion sensor's run requests, identities the UI proxy vouches for). A
database writer without the secret can neither recompute the chain nor forge a proof.

Given to the platform as `MLPLAT_AUDIT_KEY` (the secret itself) or `MLPLAT_AUDIT_KEY_FILE` (a file,
one secret per line, the first signs new records and the others only verify older ones, which is
how a key is rotated). Locally, without either, a key is generated once under the data root.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from platform_assets.env import data_root, deployment


class AuditKeyError(RuntimeError):
    """The governance secret is missing or unusable."""


@dataclass(frozen=True)
class AuditKeys:
    """The current signing key and every key older records may have been signed with."""

    current: str  # key id
    keys: dict[str, bytes]

    @classmethod
    def from_secrets(cls, values: list[str]) -> AuditKeys:
        values = [v.strip() for v in values if v.strip()]
        if not values:
            raise AuditKeyError("no audit key given")
        for v in values:
            if len(v) < 16:
                raise AuditKeyError("an audit key must be at least 16 characters")
        keys = {key_id(v.encode()): v.encode() for v in values}
        return cls(key_id(values[0].encode()), keys)

    def sign(self, message: str, key: str | None = None) -> str:
        return hmac.new(self.keys[key or self.current], message.encode(), "sha256").hexdigest()

    def proof_key(self) -> bytes:
        """A key for identity proofs, derived so a proof never doubles as a chain hash."""
        return hmac.new(self.keys[self.current], b"mlplat identity proofs", "sha256").digest()


def key_id(secret: bytes) -> str:
    """A public name for a key (recorded with each audit record); reveals nothing about it."""
    return hashlib.sha256(b"mlplat audit key id:" + secret).hexdigest()[:12]


def audit_keys() -> AuditKeys:
    """The deployment's keys: MLPLAT_AUDIT_KEY / MLPLAT_AUDIT_KEY_FILE, or a local generated one."""
    if os.environ.get("MLPLAT_AUDIT_KEY"):
        return AuditKeys.from_secrets([os.environ["MLPLAT_AUDIT_KEY"]])
    path = os.environ.get("MLPLAT_AUDIT_KEY_FILE")
    if path:
        try:
            return AuditKeys.from_secrets(Path(path).read_text().splitlines())
        except OSError as exc:
            raise AuditKeyError(f"MLPLAT_AUDIT_KEY_FILE={path}: {exc.strerror}") from exc
    if deployment() != "local":
        raise AuditKeyError(
            "MLPLAT_AUDIT_KEY or MLPLAT_AUDIT_KEY_FILE must be set when MLPLAT_ENV is "
            "'services' or 'k8s' (the audit key must not live in the platform database)"
        )
    return AuditKeys.from_secrets(_local_key(data_root() / "secrets" / "audit.key"))


def _local_key(path: Path) -> list[str]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole to a private file, then linked into place: the link fails if the key
        # exists, so two processes starting at once keep one key, and no process ever reads a
        # key file that is created but not yet written.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().splitlines()
