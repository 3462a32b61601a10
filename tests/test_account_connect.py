"""`publisher accounts connect` and `publisher tenants create --adapter emulator`, against a
real Instagram emulator process: a token Instagram vouches for is stored sealed; anything
else is one line on stderr, exit 1, and nothing written."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from cli.main import main
from harness.stack import ROOT, free_port, wait_until
from shared.accounts.credentials import unseal
from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.kit.settings import get_settings
from shared.models import INSTAGRAM_ADAPTER, SANDBOX_ADAPTER, SocialAccount
from tests.checks import counts, migration_database
from tests.conftest import TEST_DATABASE_URL
from tests.factories import TenantFixture

TENANT_TABLES = ("organizations", "projects", "social_accounts", "api_keys")


@contextmanager
def _emulator_process(platform: str) -> Iterator[str]:
    """`publisher emulator <platform>` on a free port, answering its /healthz; its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "emulator", platform, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"the emulator exited with {proc.returncode}"
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    try:
        wait_until(healthy, 60, what=f"the {platform} emulator")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """The Instagram emulator, as a process."""
    with _emulator_process("instagram") as url:
        yield url


@pytest.fixture(scope="module")
def tiktok_emulator() -> Iterator[str]:
    """The TikTok emulator, as a process."""
    with _emulator_process("tiktok") as url:
        yield url


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A local URL that refuses connections: its port is bound here, and never listened on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


@pytest.fixture
def settings_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point INSTAGRAM_API_URL of this process at a URL, for the test's duration."""

    def point(url: str) -> None:
        monkeypatch.setattr(get_settings(), "instagram_api_url", url)

    return point


def _issue(emulator: str, **body: str) -> dict[str, Any]:
    """An account and its token, as Instagram Login would hand them over."""
    r = httpx.post(f"{emulator}/emulator/accounts", json=body, timeout=10)
    assert r.status_code == 201, r.text
    issued: dict[str, Any] = r.json()
    return issued


def _accounts(project_id: str) -> dict[str, SocialAccount]:
    with transaction() as tx:
        rows = tx.session.scalars(
            select(SocialAccount).where(SocialAccount.project_id == project_id)
        ).all()
    return {row.id: row for row in rows}


def _connect(project: str, user_id: str, token: str, *extra: str) -> list[str]:
    return [
        "accounts",
        "connect",
        "--project",
        project,
        "--platform",
        "instagram",
        "--user-id",
        user_id,
        "--access-token",
        token,
        *extra,
    ]


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failing command writes, once it exited 1 having written nothing."""
    before = counts(TENANT_TABLES)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("publisher: ")
    assert counts(TENANT_TABLES) == before
    return lines[0]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_connect_stores_a_verified_token_sealed(
    emulator: str,
    tenant: TenantFixture,
    settings_on: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings_on(emulator)  # the default of --api-url
    issued = _issue(emulator, username="acme.brand")
    before = utcnow().replace(microsecond=0)
    argv = _connect(
        tenant.project_id,
        issued["userId"],
        issued["accessToken"],
        "--expires-in",
        str(issued["expiresIn"]),
        "--json",
    )
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert issued["accessToken"] not in captured.out + captured.err
    shown = json.loads(captured.out)
    assert set(shown) == {"id", "platform", "handle", "status", "tokenExpiresAt"}
    assert (shown["platform"], shown["handle"], shown["status"]) == (
        "instagram",
        "acme.brand",
        "connected",
    )
    lifetime = timedelta(seconds=issued["expiresIn"])
    assert before + lifetime <= _parse(shown["tokenExpiresAt"]) <= utcnow() + lifetime

    account = _accounts(tenant.project_id)[shown["id"]]
    assert account.organization_id == tenant.organization_id
    assert (account.adapter, account.base_url) == (INSTAGRAM_ADAPTER, emulator)
    assert account.platform_user_id == issued["userId"]
    assert account.token_refreshed_at is not None
    assert account.connected_at is not None
    assert account.credentials is not None
    assert issued["accessToken"].encode() not in account.credentials
    assert unseal(account.credentials).access_token == issued["accessToken"]


def test_connect_refuses_a_token_instagram_refuses(
    emulator: str, tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = _issue(emulator)
    bogus = "IGAA-not-a-token-3c1d"
    line = _fails(
        _connect(tenant.project_id, issued["userId"], bogus, "--api-url", emulator), capsys
    )
    assert "Instagram refused the token" in line
    assert "(code 190)" in line
    assert bogus not in line


def test_connect_refuses_a_token_of_another_account(
    emulator: str, tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    mine, theirs = _issue(emulator), _issue(emulator)
    argv = _connect(tenant.project_id, mine["userId"], theirs["accessToken"], "--api-url", emulator)
    line = _fails(argv, capsys)
    assert f"belongs to Instagram user {theirs['userId']}, not to {mine['userId']}" in line


def test_connect_refuses_an_unknown_project(
    emulator: str, tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = _issue(emulator)
    unknown = f"prj_{uuid.uuid4()}"
    argv = _connect(unknown, issued["userId"], issued["accessToken"], "--api-url", emulator)
    assert _fails(argv, capsys) == f"publisher: no project {unknown}"


def test_connect_to_an_unreachable_url(
    tenant: TenantFixture, dead_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "IGAA-unsent-9a7b"  # noqa: S105 - a test value
    line = _fails(_connect(tenant.project_id, "1784", token, "--api-url", dead_url), capsys)
    assert f"{dead_url}/me does not answer" in line
    assert token not in line


def test_connect_a_tiktok_creator(
    tiktok_emulator: str, tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """TikTok: the creator info must answer for the token, and the refresh token is kept."""
    issued = httpx.post(f"{tiktok_emulator}/emulator/accounts", json={}, timeout=10).json()
    argv = _connect(tenant.project_id, issued["openId"], issued["accessToken"])
    argv[argv.index("instagram")] = "tiktok"
    assert "refresh token" in _fails([*argv, "--api-url", tiktok_emulator], capsys)
    bad = [*argv[:-1], "not-a-token", "--refresh-token", "x", "--api-url", tiktok_emulator]
    assert "TikTok refused the token" in _fails(bad, capsys)
    good = [*argv, "--refresh-token", issued["refreshToken"], "--api-url", tiktok_emulator]
    assert main([*good, "--expires-in", str(issued["expiresIn"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["platform"], shown["handle"], shown["status"]) == (
        "tiktok",
        issued["username"],
        "connected",
    )
    account = _accounts(tenant.project_id)[shown["id"]]
    assert (account.adapter, account.platform_user_id) == ("tiktok", issued["openId"])
    creds = unseal(account.credentials or b"")
    assert (creds.access_token, creds.refresh_token) == (
        issued["accessToken"],
        issued["refreshToken"],
    )


def test_tenants_create_binds_each_account_to_its_emulator(
    emulator: str,
    tiktok_emulator: str,
    settings_on: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings_on(emulator)
    monkeypatch.setattr(get_settings(), "tiktok_api_url", tiktok_emulator)
    assert main(["tenants", "create", "--name", "Emu Co", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    accounts = _accounts(created["projectId"])
    assert {a["id"] for a in created["socialAccounts"]} == set(accounts)
    by_platform = {a.platform: a for a in accounts.values()}
    instagram, tiktok = by_platform["instagram"], by_platform["tiktok"]
    assert (instagram.adapter, instagram.base_url) == (INSTAGRAM_ADAPTER, emulator)
    assert instagram.handle == "emu_co_instagram"
    assert instagram.platform_user_id is not None
    assert instagram.token_expires_at is not None
    assert instagram.credentials is not None
    # The token it holds is one the emulator accepts, for that very account.
    token = unseal(instagram.credentials).access_token
    me = httpx.get(
        f"{emulator}/me", params={"fields": "id,username", "access_token": token}, timeout=10
    )
    assert me.status_code == 200, me.text
    assert me.json() == {"id": instagram.platform_user_id, "username": "emu_co_instagram"}
    assert (tiktok.adapter, tiktok.base_url) == ("tiktok", tiktok_emulator)
    assert tiktok.handle == "emu_co_tiktok"
    info = httpx.post(
        f"{tiktok_emulator}/v2/post/publish/creator_info/query/",
        json={},
        headers={"Authorization": f"Bearer {unseal(tiktok.credentials or b'').access_token}"},
        timeout=10,
    )
    assert info.json()["data"]["creator_username"] == "emu_co_tiktok"


def test_tenants_create_with_the_emulator_down_writes_nothing(
    dead_url: str, settings_on: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    settings_on(dead_url)
    line = _fails(["tenants", "create", "--name", "Nobody", "--json"], capsys)
    assert dead_url in line
    assert "publisher emulator instagram" in line and "publisher emulator tiktok" in line
    assert "--adapter sandbox" in line
    # The sandbox binding needs no emulator, as before.
    assert main(["tenants", "create", "--name", "Nobody", "--adapter", "sandbox", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    accounts = _accounts(created["projectId"]).values()
    assert {(a.platform, a.adapter) for a in accounts} == {
        ("tiktok", SANDBOX_ADAPTER),
        ("instagram", SANDBOX_ADAPTER),
    }
    assert all(a.base_url == get_settings().sandbox_url for a in accounts)
    assert all(a.credentials is None and a.platform_user_id is None for a in accounts)


def test_connecting_the_same_account_again_reconnects_it(
    emulator: str,
    tenant: TenantFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An account in `reauth_required` is fixed by connecting it again: the same id (its
    posts stay on it), the new token, `connected`; the token may come on stdin."""
    issued = _issue(emulator)
    argv = _connect(tenant.project_id, issued["userId"], issued["accessToken"])
    assert main([*argv, "--api-url", emulator, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    with transaction() as tx:
        row = tx.session.get(SocialAccount, first["id"])
        assert row is not None
        row.status, row.status_reason = "reauth_required", "The access token expired"
    again = httpx.post(
        f"{emulator}/emulator/accounts", json={"userId": issued["userId"]}, timeout=10
    ).json()
    monkeypatch.setattr(sys, "stdin", io.StringIO(again["accessToken"] + "\n"))
    argv = _connect(tenant.project_id, issued["userId"], "-", "--api-url", emulator, "--json")
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["id"], second["status"]) == (first["id"], "connected")
    accounts = [
        a for a in _accounts(tenant.project_id).values() if a.platform_user_id == issued["userId"]
    ]
    assert len(accounts) == 1
    assert accounts[0].status_reason is None
    assert accounts[0].credentials is not None
    assert unseal(accounts[0].credentials).access_token == again["accessToken"]


def test_an_empty_token_on_stdin_is_refused(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    line = _fails(_connect(tenant.project_id, "17841400000000000", "-"), capsys)
    assert "no access token" in line


def test_migration_0014_gives_refused_accounts_their_platforms_code() -> None:
    """Accounts marked `reauth_required` before 0014 get the code their platform answers a
    dead token with (publish-now's PLATFORM_ERROR names it); others get none. And back."""
    accounts = [
        {"id": "sa_ig", "platform": "instagram", "status": "reauth_required"},
        {"id": "sa_tt", "platform": "tiktok", "status": "reauth_required"},
        {"id": "sa_ok", "platform": "tiktok", "status": "connected"},
    ]
    project = "INSERT INTO projects (id, organization_id, name) VALUES ('prj_1', 'org_1', 'P')"
    with migration_database("publisher_test_account_migration", TEST_DATABASE_URL) as (cfg, db):
        command.upgrade(cfg, "0013")
        with db.begin() as conn:
            for statement in (
                "INSERT INTO organizations (id, name) VALUES ('org_1', 'O')",
                project,
            ):
                conn.execute(text(statement))
            conn.execute(
                text(
                    "INSERT INTO social_accounts (id, organization_id, project_id, platform,"
                    " handle, adapter, base_url, status) VALUES (:id, 'org_1', 'prj_1',"
                    " :platform, 'h', 'sandbox', 'http://x', :status)"
                ),
                accounts,
            )
        command.upgrade(cfg, "head")
        with db.connect() as conn:
            codes = dict(
                conn.execute(text("SELECT id, status_platform_code FROM social_accounts")).all()
            )
        assert codes == {"sa_ig": "190", "sa_tt": "access_token_invalid", "sa_ok": None}
        command.downgrade(cfg, "0013")
        columns = {c["name"] for c in inspect(db).get_columns("social_accounts")}
        assert "status_platform_code" not in columns
