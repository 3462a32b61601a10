"""Test wiring: a dedicated PostgreSQL database and Redis db, reset between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError

from api.app import create_app
from harness.stack import Stack
from shared.kit.db import drop_database, engine, init_engine
from shared.kit.migrate import migrate
from shared.kit.settings import get_settings
from shared.models import Base
from tests.factories import TenantFixture, make_tenant

# No module reads settings when imported (the worker's Celery app reads them when first
# configured), so pointing them at the test database here, after the imports, is enough.
assert get_settings.cache_info().currsize == 0, "a module read settings at import"
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/publisher_test"
)
os.environ["DATABASE_URL"] = TEST_DATABASE_URL
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ["ENVIRONMENT"] = "test"
# In-process tests make tenants with one key and many requests a minute: partner's limits are
# at least what every key had before tiers (1,200 reads, 300 writes a minute).
os.environ["RATE_LIMIT_DEFAULT_TIER"] = "partner"
os.environ.setdefault("STATE_DIR", "/tmp/publisher-test-state")  # noqa: S108


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh database per run, migrated the way `publisher migrate` does it."""
    drop_database(TEST_DATABASE_URL)
    migrate(TEST_DATABASE_URL)
    init_engine("publisher.tests", pool_size=20)
    yield TEST_DATABASE_URL
    engine().dispose()


DEADLOCK_DETECTED = "40P01"
TABLES = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))


@pytest.fixture(autouse=True)
def clean_db(database: str) -> None:
    """Every test starts from empty tables. Once a test has started the session's stack, its
    beat and workers keep working on this database: a TRUNCATE of every table can deadlock
    with a dispatcher tick that locks some of them in another order, and PostgreSQL then
    cancels one of the two; the TRUNCATE is simply run again."""
    for attempt in range(10):
        try:
            with engine().begin() as conn:
                conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
            return
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED or attempt == 9:
                raise


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    """No test sees another's broker messages."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushdb()
    client.close()


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The app in-process; server errors come back as responses, as a caller sees them."""
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def tenant() -> TenantFixture:
    """An organization with a project, a tiktok and an instagram account, and a full key."""
    return make_tenant("Acme")


@pytest.fixture
def other_tenant() -> TenantFixture:
    """A second organization, for isolation tests."""
    return make_tenant("Rival")


# The fault tiers' stacks: short leases and graces so that fault tests see recovery within
# seconds.
STACK_ENV = {
    "LEASE_S": "5",
    "REDISPATCH_GRACE_S": "3",
    "REAP_INTERVAL_S": "1",
    "PLATFORM_TIMEOUT_S": "5",
    "PLATFORM_BACKOFF_BASE_S": "0.05",
    "PLATFORM_BACKOFF_CAP_S": "0.5",
    # A post the platform was down for tries again within 2 s of its wait.
    "PLATFORM_OUTAGE_RETRY_CAP_S": "2",
    # Load tests fire hundreds of requests a second with one key.
    "RATE_LIMIT_MULTIPLIER": "1000000",
    "METRICS_POST_STATE_TTL_S": "0",
    # Posts TikTok completes on its own are asked about every 0.5-2 s, not minutes.
    "POLL_FIRST_S": "0.5",
    "POLL_CAP_S": "2",
    # Webhook retries within seconds: 0 s, then 0.5, 1 and 2 s after each failure.
    "WEBHOOK_RETRY_SCHEDULE_S": "0,0.5,1,2",
    "WEBHOOK_TIMEOUT_S": "3",
    # A receiver failing every event's first tries fails dozens in a row at a wave:
    # pausing it is the in-process tier's subject (tests/test_webhooks.py).
    "WEBHOOK_PAUSE_AFTER": "100000",
}


@pytest.fixture(scope="session")
def stack(database: str) -> Iterator[Stack]:
    """A private redis-server, sandbox, emulators, API, two Celery workers, the webhook
    deliveries' worker and beat, as processes."""
    s = Stack(
        database_url=database,
        workers=2,
        env_overrides=dict(STACK_ENV),
    )
    try:
        s.start()
    except Exception:
        print(s.logs())
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client on the running API; the sandbox starts each test empty and fault-free."""
    stack.reset_sandbox()
    stack.arm()
    with httpx.Client(base_url=stack.api_url, timeout=30) as c:
        yield c


@pytest.fixture
def live_tenant(stack: Stack) -> TenantFixture:
    """A tenant whose social accounts post to the stack's sandbox."""
    return make_tenant("Live", sandbox_url=stack.sandbox_url)


@contextmanager
def database_of_its_own(database: str, suffix: str) -> Iterator[str]:
    """A migrated database beside the session's, for a module whose stack must not share
    one with the session's stack (whose dispatcher and reaper, once a test started it, keep
    acting on every due post of the shared database). This process's engine points at it
    while the block runs."""
    url = make_url(database)
    own = url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)
    drop_database(own)
    migrate(own)
    init_engine("publisher.tests", pool_size=10, url=own)
    try:
        yield own
    finally:
        init_engine("publisher.tests", pool_size=20)
        drop_database(own)
