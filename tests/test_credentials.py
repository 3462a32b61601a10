"""Social-account credentials at rest: sealed with CREDENTIAL_KEYS, never in clear in the
database, rotated by `publisher accounts reencrypt`; keys checked when settings are read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy import select, text

from cli.main import main
from harness.stack import ROOT
from shared.accounts.credentials import (
    Credentials,
    CredentialsUnreadable,
    reencrypt_all,
    seal,
    unseal,
)
from shared.kit.db import engine, transaction
from shared.kit.settings import DEFAULT_CREDENTIAL_KEY, Settings, get_settings
from shared.models import SocialAccount, WebhookEndpoint
from tests.factories import TenantFixture, instagram_account

TOKEN = "IGAA-long-lived-5e1f0c2a9b"  # noqa: S105 - a test value
REFRESH = "IGAA-refresh-8d3b7a41"


def _keys(*keys: bytes) -> Settings:
    return Settings(credential_keys=",".join(k.decode() for k in keys))


def _account(tenant: TenantFixture, blob: bytes | None = None) -> str:
    """An Instagram account of the tenant, its credentials sealed with the process's keys
    (or replaced by `blob`); its id."""
    account_id = instagram_account(tenant, Credentials(TOKEN, REFRESH))
    if blob is not None:
        with engine().begin() as conn:
            conn.execute(
                text("UPDATE social_accounts SET credentials = :b WHERE id = :id"),
                {"b": blob, "id": account_id},
            )
    return account_id


def _blob(account_id: str) -> bytes:
    with engine().connect() as conn:
        value = conn.execute(
            text("SELECT credentials FROM social_accounts WHERE id = :id"), {"id": account_id}
        ).scalar_one()
    return bytes(value)


def test_seal_and_unseal_roundtrip() -> None:
    settings = _keys(Fernet.generate_key())
    for creds in (Credentials(TOKEN), Credentials(TOKEN, REFRESH)):
        blob = seal(creds, settings)
        assert TOKEN.encode() not in blob
        assert unseal(blob, settings) == creds
    # Sealing twice never gives the same bytes (a fresh IV each time).
    assert seal(Credentials(TOKEN), settings) != seal(Credentials(TOKEN), settings)
    # Nor does a traceback or a log line that shows the value show the token.
    assert TOKEN not in repr(Credentials(TOKEN, REFRESH))
    assert REFRESH not in repr(Credentials(TOKEN, REFRESH))


def test_the_database_holds_no_token_in_clear(tenant: TenantFixture) -> None:
    account_id = _account(tenant)
    blob = _blob(account_id)
    for secret in (TOKEN, REFRESH):
        assert secret.encode() not in blob
    with engine().connect() as conn:
        # Not in any column of the row, in whatever form PostgreSQL renders it.
        row = conn.execute(
            text("SELECT to_jsonb(a)::text FROM social_accounts a WHERE id = :id"),
            {"id": account_id},
        ).scalar_one()
    assert TOKEN not in row
    assert REFRESH not in row
    assert unseal(blob) == Credentials(TOKEN, REFRESH)


def test_rotation_prepend_reencrypt_drop(tenant: TenantFixture) -> None:
    a, b = Fernet.generate_key(), Fernet.generate_key()
    account_id = _account(tenant, seal(Credentials(TOKEN, REFRESH), _keys(a)))
    sandbox_accounts = {tenant.accounts["tiktok"], tenant.accounts["instagram"]}
    # Prepended: the old key still decrypts; the new one alone does not yet.
    assert unseal(_blob(account_id), _keys(b, a)).access_token == TOKEN
    with pytest.raises(CredentialsUnreadable, match="CREDENTIAL_KEYS"):
        unseal(_blob(account_id), _keys(b))

    with transaction() as tx:
        assert reencrypt_all(tx.session, _keys(b, a)) == 1
    assert unseal(_blob(account_id), _keys(b)) == Credentials(TOKEN, REFRESH)
    with pytest.raises(CredentialsUnreadable):
        unseal(_blob(account_id), _keys(a))
    # A second run finds nothing left under the old key; accounts without credentials stay so.
    with transaction() as tx:
        assert reencrypt_all(tx.session, _keys(b, a)) == 0
        without = tx.session.scalars(
            select(SocialAccount.id).where(SocialAccount.credentials.is_(None))
        ).all()
    assert set(without) == sandbox_accounts


def test_a_blob_no_key_opens_is_a_clear_error(tenant: TenantFixture) -> None:
    lost = Fernet.generate_key()
    settings = _keys(Fernet.generate_key())
    with pytest.raises(CredentialsUnreadable, match="accounts reencrypt"):
        unseal(seal(Credentials(TOKEN), _keys(lost)), settings)
    with pytest.raises(CredentialsUnreadable):
        unseal(b"not a sealed credential", settings)
    # reencrypt names the account, and changes nothing.
    account_id = _account(tenant, seal(Credentials(TOKEN), _keys(lost)))
    before = _blob(account_id)
    with pytest.raises(CredentialsUnreadable, match=account_id), transaction() as tx:
        reencrypt_all(tx.session, settings)
    assert _blob(account_id) == before


def test_the_reencrypt_command(
    tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = get_settings().credential_keys, Fernet.generate_key().decode()
    account_id = _account(tenant)
    monkeypatch.setattr(get_settings(), "credential_keys", f"{new},{old}")
    assert main(["accounts", "reencrypt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"reencrypted": 1}
    monkeypatch.setattr(get_settings(), "credential_keys", new)
    assert unseal(_blob(account_id)).access_token == TOKEN
    # With the sealing key gone before its rows were moved: one line, exit 1.
    monkeypatch.setattr(get_settings(), "credential_keys", Fernet.generate_key().decode())
    assert main(["accounts", "reencrypt"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert account_id in captured.err


def test_production_refuses_the_development_key() -> None:
    chosen = Fernet.generate_key().decode()
    production = {"environment": "production", "flower_password": "flower-1f2e3d"}
    with pytest.raises(ValidationError, match="CREDENTIAL_KEYS must be set"):
        Settings(**production)
    # ...anywhere in the list: it decrypts, so anyone holding it reads what it sealed.
    with pytest.raises(ValidationError, match="CREDENTIAL_KEYS must be set"):
        Settings(**production, credential_keys=f"{chosen},{DEFAULT_CREDENTIAL_KEY}")
    assert Settings(**production, credential_keys=chosen).credential_keys == chosen
    assert Settings(environment="development").credential_keys == DEFAULT_CREDENTIAL_KEY
    assert Settings(environment="test").credential_keys == DEFAULT_CREDENTIAL_KEY


@pytest.mark.parametrize(
    "keys",
    [
        "not-a-fernet-key-5b2e",
        "",
        " , ",
        f"{Fernet.generate_key().decode()},short-secret-5b2e",
        Fernet.generate_key().decode()[:-2],
    ],
)
def test_malformed_keys_are_refused(keys: str) -> None:
    with pytest.raises(ValidationError, match="CREDENTIAL_KEYS") as refused:
        Settings(credential_keys=keys)
    # The refusal never repeats what was refused: it may be a real key with a typo.
    for part in (k.strip() for k in keys.split(",")):
        if part:
            assert part not in str(refused.value)


def test_key_list_is_normalised() -> None:
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = Settings(credential_keys=f" {a} ,{b},")
    assert settings.credential_key_list == [a, b]


def test_a_malformed_key_stops_a_command_at_start() -> None:
    env = {**os.environ, "CREDENTIAL_KEYS": "not-a-fernet-key-77c1"}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "accounts", "reencrypt"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "CREDENTIAL_KEYS: key 1 of 1 is not a Fernet key" in done.stderr
    assert "not-a-fernet-key-77c1" not in done.stderr
    assert "Traceback" not in done.stderr


def test_reencrypt_moves_webhook_secrets_too(tenant: TenantFixture) -> None:
    """An endpoint's secret and, during a rotation, its previous one are sealed under the
    same keys: reencrypt moves both, and both still sign."""
    from shared.kit.clock import utcnow
    from shared.webhooks import endpoints

    a, b = Fernet.generate_key(), Fernet.generate_key()
    now = utcnow()
    with transaction() as tx:
        made = endpoints.register(
            tx.session,
            tenant.organization_id,
            "https://hooks.example.com/in",
            ["post.published"],
            None,
            settings=_keys(a),
            now=now,
        )
        rotated = endpoints.rotate_secret(
            tx.session, tenant.organization_id, made.endpoint.id, settings=_keys(a), now=now
        )
    with transaction() as tx:
        assert reencrypt_all(tx.session, _keys(b, a)) == 1
        endpoint = tx.session.get(WebhookEndpoint, made.endpoint.id)
        assert endpoint is not None
        assert endpoints.signing_secrets(endpoint, _keys(b), now) == [rotated.secret, made.secret]
    with transaction() as tx:
        assert reencrypt_all(tx.session, _keys(b, a)) == 0
