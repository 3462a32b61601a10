"""The Instagram emulator served over real HTTP in the test's own process, and tenants whose
Instagram account it issued: for tests of the adapter and the protocol against it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from sandbox.instagram import create_app
from sandbox.instagram_faults import InstagramFaults
from shared.accounts.accounts import (
    IssuedAccount,
    add_issued_account,
    emulator_instagram_account,
)
from shared.accounts.credentials import Credentials
from shared.content.containers import create_container, get_project
from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.models import INSTAGRAM_ADAPTER, Platform
from shared.publishing import posts
from shared.tenancy.tenants import create_tenant
from tests.factories import TenantFixture, fixture_of


@dataclass
class Served:
    """A running emulator: its base URL and app (whose state a test may read)."""

    url: str
    app: FastAPI

    def set_faults(self, **knobs: Any) -> None:
        httpx.put(f"{self.url}/faults", json=knobs).raise_for_status()

    def ledger(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(f"{self.url}/ledger").json()["posts"]
        return entries


@contextmanager
def served_instagram(**knobs: Any) -> Iterator[Served]:
    """An Instagram emulator with these knobs on a free port, until the block ends."""
    app = create_app(InstagramFaults(**knobs))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert time.monotonic() < deadline, "the emulator did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def instagram_tenant(name: str, instagram_url: str, user_id: str | None = None) -> TenantFixture:
    """A tenant whose Instagram account the emulator issued (its TikTok one is sandbox-bound).
    A fixed `user_id` makes a seeded emulator's faults the same on every run: the user id is
    part of each call's fault key."""
    if user_id is None:
        issued = emulator_instagram_account(instagram_url, timeout=5)
    else:
        body = httpx.post(f"{instagram_url}/emulator/accounts", json={"userId": user_id}).json()
        issued = IssuedAccount(
            body["userId"],
            body["username"],
            Credentials(body["accessToken"]),
            float(body["expiresIn"]),
            INSTAGRAM_ADAPTER,
            instagram_url,
        )
    with transaction() as tx:
        t = create_tenant(
            tx.session,
            name,
            [Platform.TIKTOK.value, Platform.INSTAGRAM.value],
            sandbox_url="http://127.0.0.1:8900",
            issued={Platform.INSTAGRAM.value: issued},
        )
    return fixture_of(t)


def more_instagram_accounts(tenant: TenantFixture, instagram_url: str, n: int) -> list[str]:
    """n more emulator-issued Instagram accounts in the tenant's project: their ids."""
    issued = [emulator_instagram_account(instagram_url, timeout=5) for _ in range(n)]
    with transaction() as tx:
        accounts = [
            add_issued_account(
                tx.session,
                tenant.organization_id,
                tenant.project_id,
                Platform.INSTAGRAM.value,
                account,
            )
            for account in issued
        ]
        tx.session.flush()
        return [a.id for a in accounts]


IMAGE = ("https://cdn.example.com/photo.jpg", "image")
VIDEO = ("https://cdn.example.com/clip.mp4", "video")


def due_post(
    tenant: TenantFixture,
    caption: str,
    media: list[tuple[str, str | None]] | None = None,
    platform: str = Platform.INSTAGRAM.value,
    account_id: str | None = None,
) -> tuple[str, int]:
    """One post due now with a task token (counted as sent an hour ahead, so a running
    stack's dispatcher leaves it to the test): (post id, token)."""
    now = utcnow() - timedelta(seconds=1)
    actor = posts.Actor(tenant.organization_id, tenant.key_id, "test")
    with transaction() as tx:
        project = get_project(tx.session, tenant.organization_id, tenant.project_id)
        container = create_container(tx.session, project, caption, media or [IMAGE], now=now)
        scheduled = posts.schedule(
            tx.session,
            actor,
            container,
            now,
            [posts.Target(account_id or tenant.accounts[platform])],
            now=utcnow() + timedelta(hours=1),
            task_id_for_now=True,
        )
    dispatch = scheduled.dispatches[0]
    return dispatch.post_id, dispatch.token
