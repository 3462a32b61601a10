"""Social-account credentials at rest: JSON sealed with Fernet under CREDENTIAL_KEYS, the first
key encrypting and every one decrypting, so that keys rotate without a moment unreadable."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.kit.errors import PublisherError
from shared.kit.settings import Settings, get_settings
from shared.models import SocialAccount, WebhookEndpoint


class CredentialsUnreadable(PublisherError):
    """Sealed credentials that none of CREDENTIAL_KEYS opens."""


@dataclass(frozen=True)
class Credentials:
    """What a platform needs to act for an account; kept out of reprs, so out of logs."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)


def _keys(settings: Settings | None) -> list[Fernet]:
    return [Fernet(key) for key in (settings or get_settings()).credential_key_list]


def seal(creds: Credentials, settings: Settings | None = None) -> bytes:
    """The credentials as JSON, encrypted with the first of CREDENTIAL_KEYS."""
    payload = {"accessToken": creds.access_token, "refreshToken": creds.refresh_token}
    return _keys(settings)[0].encrypt(json.dumps(payload).encode())


def _unreadable(what: str) -> CredentialsUnreadable:
    return CredentialsUnreadable(
        f"{what} opens with none of CREDENTIAL_KEYS: was the key that sealed it dropped "
        "before `publisher accounts reencrypt` ran?"
    )


def unseal(blob: bytes, settings: Settings | None = None) -> Credentials:
    """The credentials in a sealed blob; any of CREDENTIAL_KEYS opens it."""
    try:
        payload = json.loads(MultiFernet(_keys(settings)).decrypt(blob))
    except InvalidToken:
        raise _unreadable("a sealed credential") from None
    return Credentials(payload["accessToken"], payload.get("refreshToken"))


def seal_secret(secret: str, settings: Settings | None = None) -> bytes:
    """Any other secret at rest (a webhook endpoint's signing secret), under the same keys."""
    return _keys(settings)[0].encrypt(secret.encode())


def unseal_secret(blob: bytes, settings: Settings | None = None) -> str:
    """A secret sealed by `seal_secret`."""
    try:
        return MultiFernet(_keys(settings)).decrypt(blob).decode()
    except InvalidToken:
        raise _unreadable("a sealed secret") from None


def _opens(key: Fernet, blob: bytes) -> bool:
    try:
        key.decrypt(blob)
    except InvalidToken:
        return False
    return True


def _reseal(keys: list[Fernet], blob: bytes, what: str) -> bytes | None:
    """The blob sealed with the first key, or None if it already is."""
    if _opens(keys[0], blob):
        return None
    try:
        return MultiFernet(keys).rotate(blob)
    except InvalidToken:
        raise _unreadable(what) from None


def reencrypt_all(session: Session, settings: Settings | None = None) -> int:
    """Seal every account's credentials, and every webhook endpoint's secrets, anew with the
    first key; the number of rows changed (those under another key: a second run changes
    none)."""
    keys = _keys(settings)
    changed = 0
    accounts = session.scalars(
        select(SocialAccount)
        .where(SocialAccount.credentials.is_not(None))
        .order_by(SocialAccount.id)
        .with_for_update()
    ).all()
    for account in accounts:
        assert account.credentials is not None
        resealed = _reseal(keys, account.credentials, f"the credential of account {account.id}")
        if resealed is not None:
            account.credentials, changed = resealed, changed + 1
    endpoints = session.scalars(
        select(WebhookEndpoint).order_by(WebhookEndpoint.id).with_for_update()
    ).all()
    for endpoint in endpoints:
        what = f"the secret of webhook endpoint {endpoint.id}"
        secret = _reseal(keys, endpoint.secret, what)
        previous = (
            _reseal(keys, endpoint.previous_secret, what)
            if endpoint.previous_secret is not None
            else None
        )
        if secret is not None:
            endpoint.secret = secret
        if previous is not None:
            endpoint.previous_secret = previous
        changed += secret is not None or previous is not None
    session.flush()
    return changed
