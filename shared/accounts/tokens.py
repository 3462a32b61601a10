"""Access tokens: refreshed ahead of expiry under the account's row lock, so two workers never
both spend a refresh (a rotating refresh token works once), and the account marked
`reauth_required` when the platform will not take its token any more.

Lock order: a post's row, then its account's; never the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.accounts.credentials import Credentials, seal, unseal
from shared.events import EventType, account_event
from shared.kit.clock import utcnow
from shared.kit.db import Tx, run_in_transaction
from shared.kit.settings import Settings
from shared.models import AccountStatus, SocialAccount
from shared.publishing.platforms import PlatformError, Refreshed, dead_token_code

log = logging.getLogger("publisher.accounts")

Refresher = Callable[[SocialAccount], Refreshed]


def lock_account(session: Session, account_id: str) -> SocialAccount:
    """The account, row-locked for this transaction."""
    return session.scalars(
        select(SocialAccount).where(SocialAccount.id == account_id).with_for_update()
    ).one()


def mark_reauth_required(
    session: Session, account_id: str, reason: str, platform_code: str | None = None
) -> None:
    """The platform refuses this account's token for good: the user must reconnect it.
    `platform_code`: the platform's code for it; unset, the one it answers a dead token with."""
    account = lock_account(session, account_id)
    if account.status != AccountStatus.CONNECTED:
        return
    account.status = AccountStatus.REAUTH_REQUIRED.value
    account.status_reason = reason[:500]
    account.status_platform_code = platform_code or dead_token_code(account.platform)
    account_event(session, EventType.ACCOUNT_NEEDS_REAUTH, account, reason=account.status_reason)
    log.warning(
        "account needs reauthorization", extra={"accountId": account_id, "reason": reason[:200]}
    )


def refresh_due(account: SocialAccount, settings: Settings, now: datetime) -> bool:
    """Whether the account's token expires within the refresh window: TOKEN_REFRESH_AHEAD_S,
    or half the token's lifetime if that is shorter (TikTok's last a day, Instagram's 60)."""
    expires = account.token_expires_at
    if expires is None:
        return False
    ahead = timedelta(seconds=settings.token_refresh_ahead_s)
    if account.token_refreshed_at is not None:
        ahead = min(ahead, (expires - account.token_refreshed_at) / 2)
    return expires - now <= ahead


def ensure_fresh(
    seen: SocialAccount, settings: Settings, refresher: Refresher, min_age: timedelta
) -> SocialAccount:
    """The account with a token that is not about to expire, refreshing it if it is, under
    the account's row lock. A platform refusal marks it `reauth_required`; a platform that
    cannot answer leaves the current (still valid) token in place for the next try.

    `seen` is the account as read before the lock: if its token changed meanwhile, another
    worker refreshed it and this one uses that token instead of spending another refresh
    (TikTok's refresh tokens may rotate: a second use of one fails). A refresh whose answer
    was lost, or whose saving crashed, spends a rotating token: the next try is refused
    (`invalid_grant`) and the account becomes `reauth_required`, reported, never silent.
    `min_age`: how old the platform wants a token before it refreshes it."""
    account_id, seen_refresh = seen.id, seen.token_refreshed_at

    def step(tx: Tx) -> SocialAccount:
        now = utcnow()
        account = lock_account(tx.session, account_id)
        if (
            account.status != AccountStatus.CONNECTED
            or account.token_refreshed_at != seen_refresh
            or not refresh_due(account, settings, now)
        ):
            return account  # another worker refreshed it first, or nothing to do
        assert account.token_expires_at is not None
        old = unseal(account.credentials, settings) if account.credentials else None
        has_refresh_token = old is not None and old.refresh_token is not None
        if account.token_expires_at <= now and not has_refresh_token:
            # Instagram refreshes only a live token; TikTok's refresh token outlives it.
            mark_reauth_required(tx.session, account_id, "The access token expired")
            return account
        issued = account.token_refreshed_at
        if issued is not None and now - issued < min_age:
            return account  # too young to refresh; still valid
        try:
            refreshed = refresher(account)
        except ValueError as exc:  # nothing to refresh with (no refresh token)
            log.warning(
                "token cannot be refreshed", extra={"accountId": account_id, "error": str(exc)}
            )
            return account
        except PlatformError as exc:
            if exc.token_invalid:
                mark_reauth_required(tx.session, account_id, str(exc), exc.platform_code)
            else:
                log.warning(
                    "token refresh failed; keeping the current token",
                    extra={"accountId": account_id, "error": str(exc)},
                )
            return account
        account.credentials = seal(
            Credentials(
                refreshed.access_token,
                refreshed.refresh_token or (old.refresh_token if old else None),
            ),
            settings,
        )
        account.token_expires_at = now + timedelta(seconds=refreshed.expires_in)
        account.token_refreshed_at = now
        log.info("access token refreshed", extra={"accountId": account_id})
        return account

    return run_in_transaction(step)
