"""`X-Layers-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
one `v1=` per secret that signs (two during a rotation)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, url-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(signing: list[str], body: bytes, t: int) -> str:
    """The header's value for this body at time `t`, signed with each secret."""
    signed = f"{t}.".encode() + body
    parts = [f"t={t}"]
    parts += [
        "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() for secret in signing
    ]
    return ",".join(parts)
