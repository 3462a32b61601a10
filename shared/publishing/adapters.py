"""Which adapter publishes for an account, built from its row: the sandbox, or the Instagram
Graph API (the emulator or Meta) with the account's decrypted token."""

from __future__ import annotations

from datetime import timedelta

from shared.accounts.credentials import unseal
from shared.kit.settings import Settings
from shared.models import INSTAGRAM_ADAPTER, SANDBOX_ADAPTER, TIKTOK_ADAPTER, SocialAccount
from shared.publishing.instagram import InstagramAdapter
from shared.publishing.platforms import (
    CompletesLater,
    PlatformAdapter,
    Refreshed,
    SandboxAdapter,
    http_client,
)
from shared.publishing.tiktok import TikTokAdapter


def _instagram(account: SocialAccount, settings: Settings) -> InstagramAdapter:
    if account.credentials is None or account.platform_user_id is None:
        raise ValueError(f"account {account.id} is bound to Instagram without credentials")
    return InstagramAdapter(
        account.base_url,
        http_client(settings.platform_timeout_s),
        user_id=account.platform_user_id,
        access_token=unseal(account.credentials, settings).access_token,
        container_wait_s=settings.instagram_container_wait_s,
    )


def _tiktok(account: SocialAccount, settings: Settings) -> TikTokAdapter:
    if account.credentials is None:
        raise ValueError(f"account {account.id} is bound to TikTok without credentials")
    return TikTokAdapter(
        account.base_url,
        http_client(settings.platform_timeout_s),
        access_token=unseal(account.credentials, settings).access_token,
    )


_CLASSES: dict[str, type[PlatformAdapter]] = {
    SANDBOX_ADAPTER: SandboxAdapter,
    INSTAGRAM_ADAPTER: InstagramAdapter,
    TIKTOK_ADAPTER: TikTokAdapter,
}


def completes_later(adapter: str) -> bool:
    """Whether this adapter's platform completes an accepted post on its own (TikTok)."""
    return issubclass(_CLASSES[adapter], CompletesLater)


def adapter_for(account: SocialAccount, settings: Settings) -> PlatformAdapter:
    """The adapter this account is bound to; one pooled HTTP client per process."""
    if account.adapter == SANDBOX_ADAPTER:
        return SandboxAdapter(account.base_url, http_client(settings.platform_timeout_s))
    if account.adapter == INSTAGRAM_ADAPTER:
        return _instagram(account, settings)
    if account.adapter == TIKTOK_ADAPTER:
        return _tiktok(account, settings)
    raise ValueError(f"unknown platform adapter {account.adapter!r}")


def refresh_token(account: SocialAccount, settings: Settings) -> Refreshed:
    """Ask the account's platform for a fresh access token. Raises PlatformError."""
    if account.adapter == INSTAGRAM_ADAPTER:
        return _instagram(account, settings).refresh()
    if account.adapter == TIKTOK_ADAPTER and account.credentials is not None:
        refresh = unseal(account.credentials, settings).refresh_token
        if refresh:
            return _tiktok(account, settings).refresh(
                refresh, settings.tiktok_client_key, settings.tiktok_client_secret
            )
    raise ValueError(f"account {account.id} has no token to refresh")


def refresh_min_age(account: SocialAccount, settings: Settings) -> timedelta:
    """How old a token must be before its platform refreshes it (Instagram: 24 h)."""
    if account.adapter == INSTAGRAM_ADAPTER:
        return timedelta(seconds=settings.instagram_refresh_min_age_s)
    return timedelta(0)
