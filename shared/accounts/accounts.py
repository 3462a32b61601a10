"""Social accounts: bound to a platform adapter and where it posts, always read within one
organization's project; Instagram accounts connected with a token the platform vouches for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from shared.accounts.credentials import Credentials, seal
from shared.events import EventType, account_event
from shared.kit import ids
from shared.kit.clock import utcnow
from shared.kit.db import Tx, run_in_transaction, transaction
from shared.kit.errors import Conflict, NotFound, Unavailable, Validation
from shared.kit.settings import Settings, get_settings
from shared.models import (
    INSTAGRAM_ADAPTER,
    SANDBOX_ADAPTER,
    TIKTOK_ADAPTER,
    AccountStatus,
    Platform,
    Project,
    SocialAccount,
)

# Graph codes that mean the token itself is refused (invalid, expired, revoked, missing).
TOKEN_ERROR_CODES = frozenset({102, 104, 190})


@dataclass(frozen=True)
class IssuedAccount:
    """An account a platform (or its emulator) issued with its token, and where it posts."""

    platform_user_id: str
    handle: str
    credentials: Credentials
    expires_in: float | None
    adapter: str
    base_url: str


def add_social_account(
    session: Session,
    organization_id: str,
    project_id: str,
    platform: str,
    handle: str,
    *,
    base_url: str,
    adapter: str = SANDBOX_ADAPTER,
    platform_user_id: str | None = None,
    credentials: Credentials | None = None,
    expires_in: float | None = None,
) -> SocialAccount:
    """A social account of the project, bound to a platform adapter and where it posts, with
    its credentials sealed and its token's expiry `expires_in` seconds from now."""
    if expires_in is not None and (credentials is None or expires_in <= 0):
        raise Validation.at("expiresIn", "expiresIn must be positive, and comes with a token")
    now = utcnow()
    account = SocialAccount(
        id=ids.new_id(ids.SOCIAL_ACCOUNT),
        organization_id=organization_id,
        project_id=project_id,
        platform=platform,
        handle=handle,
        adapter=adapter,
        base_url=base_url.rstrip("/"),
        platform_user_id=platform_user_id,
        credentials=seal(credentials) if credentials is not None else None,
        # A token handed over now was issued at the latest now: the 24 h before Instagram
        # refreshes it count from here, never from earlier.
        token_refreshed_at=now if credentials is not None else None,
        token_expires_at=now + timedelta(seconds=expires_in) if expires_in is not None else None,
    )
    session.add(account)
    session.flush()  # its server defaults (status, connected_at), for the event's payload
    account_event(session, EventType.ACCOUNT_CONNECTED, account)
    return account


def add_issued_account(
    session: Session, organization_id: str, project_id: str, platform: str, issued: IssuedAccount
) -> SocialAccount:
    """A social account bound to an account its platform (or emulator) issued."""
    return add_social_account(
        session,
        organization_id,
        project_id,
        platform,
        issued.handle,
        base_url=issued.base_url,
        adapter=issued.adapter,
        platform_user_id=issued.platform_user_id,
        credentials=issued.credentials,
        expires_in=issued.expires_in,
    )


def _graph_call(
    method: str, url: str, *, timeout: float, path: str, **request: Any
) -> dict[str, Any]:
    """The JSON object Instagram (or its emulator) answers; a Graph error, another answer or
    none at all is a one-line error (`path` is the input it blames)."""
    where = url.split("?", 1)[0]
    try:
        response = httpx.request(method, url, timeout=timeout, **request)
    except httpx.HTTPError as exc:
        # Only the kind: the exception's text may hold the URL, and with it the token.
        raise Unavailable(f"{where} does not answer ({type(exc).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, subcode = error.get("code"), error.get("error_subcode")
        what = "the token" if code in TOKEN_ERROR_CODES else "the request"
        codes = f"code {code}" + (f", subcode {subcode}" if subcode is not None else "")
        message = str(error.get("message") or "no message").replace("\n", " ")
        raise Validation.at(path, f"Instagram refused {what}: {message} ({codes})")
    if not response.is_success or not isinstance(body, dict):
        raise Unavailable(f"{where} answered {response.status_code} without a Graph answer")
    return body


def _strings(body: dict[str, Any], where: str, *names: str) -> list[str]:
    """The named fields of an answer, as strings; all of them, or Unavailable."""
    values = [body.get(name) for name in names]
    if not all(isinstance(v, str | int) and str(v) for v in values):
        raise Unavailable(f"{where} answered without {' and '.join(names)}")
    return [str(v) for v in values]


def verify_instagram_token(api_url: str, user_id: str, access_token: str, *, timeout: float) -> str:
    """The username of the account `GET /me` says the token belongs to, which must be
    `user_id`."""
    url = f"{api_url.rstrip('/')}/me"
    body = _graph_call(
        "GET",
        url,
        timeout=timeout,
        path="accessToken",
        params={"fields": "id,username", "access_token": access_token},
    )
    answered, username = _strings(body, url, "id", "username")
    if answered != user_id:
        raise Validation.at(
            "userId", f"the token belongs to Instagram user {answered}, not to {user_id}"
        )
    return username


def emulator_instagram_account(
    api_url: str, username: str | None = None, *, timeout: float
) -> IssuedAccount:
    """A new account and its long-lived token, issued by the Instagram emulator as Instagram
    Login would (`POST /emulator/accounts`)."""
    base = api_url.rstrip("/")
    url = f"{base}/emulator/accounts"
    body = _graph_call(
        "POST",
        url,
        timeout=timeout,
        path="username",
        json={"username": username} if username else {},
    )
    user_id, handle, token, expires_in = _strings(
        body, url, "userId", "username", "accessToken", "expiresIn"
    )
    return IssuedAccount(
        user_id, handle, Credentials(token), float(expires_in), INSTAGRAM_ADAPTER, base
    )


def verify_tiktok_token(api_url: str, access_token: str, *, timeout: float) -> str:
    """The creator's username, as TikTok's creator info answers it for the token."""
    url = f"{api_url.rstrip('/')}/v2/post/publish/creator_info/query/"
    try:
        response = httpx.post(
            url, json={}, headers={"Authorization": f"Bearer {access_token}"}, timeout=timeout
        )
        body = response.json()
    except httpx.HTTPError as exc:
        raise Unavailable(f"{url} does not answer ({type(exc).__name__})") from None
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise Unavailable(f"{url} answered {response.status_code} without a TikTok answer")
    if error.get("code") != "ok":
        message = str(error.get("message") or "no message").replace("\n", " ")
        raise Validation.at(
            "accessToken", f"TikTok refused the token: {message} ({error.get('code')})"
        )
    data = body.get("data") if isinstance(body, dict) else None
    return _strings(data if isinstance(data, dict) else {}, url, "creator_username")[0]


def emulator_tiktok_account(
    api_url: str, username: str | None = None, *, timeout: float
) -> IssuedAccount:
    """A new creator and its token pair, issued by the TikTok emulator as Login Kit would
    (`POST /emulator/accounts`)."""
    base = api_url.rstrip("/")
    url = f"{base}/emulator/accounts"
    try:
        response = httpx.post(url, json={"username": username} if username else {}, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        raise Unavailable(f"{url} does not answer as the TikTok emulator") from None
    if not isinstance(body, dict):
        raise Unavailable(f"{url} does not answer as the TikTok emulator")
    open_id, handle, token, refresh, expires_in = _strings(
        body, url, "openId", "username", "accessToken", "refreshToken", "expiresIn"
    )
    return IssuedAccount(
        open_id, handle, Credentials(token, refresh), float(expires_in), TIKTOK_ADAPTER, base
    )


def connect_account(
    project_id: str,
    platform: str,
    *,
    user_id: str,
    access_token: str,
    refresh_token: str | None = None,
    expires_in: float | None = None,
    api_url: str | None = None,
    settings: Settings | None = None,
) -> SocialAccount:
    """An account of the project, stored once its platform vouches for the token: Instagram's
    `GET /me` must name `user_id`; TikTok's creator info must answer (the creator's open_id
    is `user_id`, and a refresh token is required: TikTok's access tokens last a day).
    Connecting one the project has already reconnects it (new token, status `connected`).
    No transaction stays open while the platform answers."""
    settings = settings or get_settings()
    if platform == Platform.TIKTOK and not refresh_token:
        raise Validation.at("refreshToken", "a TikTok account needs its refresh token")
    with transaction() as tx:
        project = tx.session.get(Project, project_id)
        if project is None:
            raise NotFound(f"no project {project_id}")
        organization_id = project.organization_id
    if platform == Platform.TIKTOK:
        base = (api_url or settings.tiktok_api_url).rstrip("/")
        username = verify_tiktok_token(base, access_token, timeout=settings.platform_timeout_s)
        adapter = TIKTOK_ADAPTER
    else:
        base = (api_url or settings.instagram_api_url).rstrip("/")
        username = verify_instagram_token(
            base, user_id, access_token, timeout=settings.platform_timeout_s
        )
        adapter = INSTAGRAM_ADAPTER
    credentials = Credentials(access_token, refresh_token)
    with transaction() as tx:
        known = tx.session.scalars(
            select(SocialAccount)
            .where(
                SocialAccount.project_id == project_id,
                SocialAccount.platform == platform,
                SocialAccount.platform_user_id == user_id,
            )
            .with_for_update()
        ).first()
        if known is not None:
            account = _reconnect(known, username, base, adapter, credentials, expires_in)
            account_event(tx.session, EventType.ACCOUNT_CONNECTED, account)
        else:
            account = add_social_account(
                tx.session,
                organization_id,
                project_id,
                platform,
                username,
                base_url=base,
                adapter=adapter,
                platform_user_id=user_id,
                credentials=credentials,
                expires_in=expires_in,
            )
        tx.session.flush()
        # The server's defaults (created_at, connected_at) too: the caller reads it detached.
        tx.session.refresh(account)
    return account


def _reconnect(
    account: SocialAccount,
    handle: str,
    base_url: str,
    adapter: str,
    credentials: Credentials,
    expires_in: float | None,
) -> SocialAccount:
    """The same platform account connected again (say after `reauth_required`): its new
    token, and `connected` once more. Its id, and so its posts, stay."""
    now = utcnow()
    account.handle = handle
    account.base_url = base_url
    account.adapter = adapter
    account.credentials = seal(credentials)
    account.token_refreshed_at = now
    account.token_expires_at = now + timedelta(seconds=expires_in) if expires_in else None
    account.status = AccountStatus.CONNECTED.value
    account.status_reason = None
    account.status_platform_code = None
    account.connected_at = now
    return account


def accounts_query(
    organization_id: str,
    project_id: str,
    platform: str | None,
    after: tuple[datetime, str] | None,
    *,
    status: str | None = None,
    sandbox_only: bool = False,
) -> Select[SocialAccount]:
    """A project's social accounts, oldest first, keyset-paginated on (created_at, id)."""
    q = select(SocialAccount).where(
        SocialAccount.organization_id == organization_id, SocialAccount.project_id == project_id
    )
    if platform is not None:
        q = q.where(SocialAccount.platform == platform)
    if status is not None:
        q = q.where(SocialAccount.status == status)
    if sandbox_only:
        q = q.where(SocialAccount.adapter == SANDBOX_ADAPTER)
    if after is not None:
        q = q.where(tuple_(SocialAccount.created_at, SocialAccount.id) > tuple_(after[0], after[1]))
    return q.order_by(SocialAccount.created_at, SocialAccount.id)


@dataclass(frozen=True)
class Disconnected:
    """A disconnect's result: the account, the posts it canceled (their wire ids), and how
    many of its posts were past the point of no return and will complete."""

    account: SocialAccount
    canceled: list[str]
    completing: int


def disconnect_account(
    account_id: str, reason: str, *, operator: str, now: datetime | None = None
) -> Disconnected:
    """Disconnect an account, in one transaction: under its row lock it becomes
    `disconnected` (a `social_account.revoked` event), and every post of it that has not
    reached its platform is canceled as a cancel would (each with its `post.canceled`
    event and the reason), so none of them is ever uploaded after this commits. Posts whose
    upload started complete. The canceled posts' tasks are revoked after commit. Retried
    if PostgreSQL rolls it back to break a deadlock with a worker's point of no return."""
    from shared.events import Actor
    from shared.publishing import posts, tasks

    now = now or utcnow()

    def work(tx: Tx) -> Disconnected:
        account = tx.session.scalars(
            select(SocialAccount).where(SocialAccount.id == account_id).with_for_update()
        ).one_or_none()
        if account is None:
            raise NotFound(f"no social account {account_id}")
        if account.status == AccountStatus.DISCONNECTED:
            raise Conflict(f"{account_id} is already disconnected", {"status": account.status})
        actor = Actor(account.organization_id, None, f"cli:{operator}")
        account.status = AccountStatus.DISCONNECTED.value
        account.status_reason = reason[:500]
        account_event(tx.session, EventType.ACCOUNT_REVOKED, account, actor=actor, reason=reason)
        done = posts.cancel_for_account(tx.session, actor, account.id, reason, now=now)
        for canceled in done.canceled:
            if canceled.revoke_task_id:
                tx.after_commit(partial(tasks.revoke, canceled.revoke_task_id))
        tx.session.flush()
        tx.session.refresh(account)
        return Disconnected(account, [c.post.public_id for c in done.canceled], done.completing)

    return run_in_transaction(work)
