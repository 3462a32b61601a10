"""Assertions on the API's answers that many test modules make."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from alembic.config import Config
from sqlalchemy import Engine, create_engine, make_url, select, text

from shared.kit.db import drop_database, engine, ensure_database, new_session, transaction
from shared.kit.migrate import alembic_config
from shared.kit.settings import Settings
from shared.models import ScheduledPost, SocialAccount
from shared.publishing.platforms import (
    PlatformAdapter,
    PlatformError,
    Preparation,
    Uploaded,
    UploadPayload,
)
from shared.publishing.protocol import run_publish

# The tables a request writes to: a request that failed must leave their counts as they were.
WRITTEN_TABLES = (
    "content_containers",
    "scheduled_posts",
    "schedule_intents",
    "events",
    "idempotency_keys",
)


def count(table: str) -> int:
    with engine().connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def counts(tables: tuple[str, ...] = WRITTEN_TABLES) -> dict[str, int]:
    return {t: count(t) for t in tables}


def post_row(post_id: str) -> ScheduledPost:
    """The row behind a wire id (the same as its key unless the caller chose the id)."""
    with transaction() as tx:
        row = tx.session.scalars(
            select(ScheduledPost).where(ScheduledPost.public_id == post_id)
        ).one_or_none()
        assert row is not None, post_id
        return row


def envelope_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error object, after checking the exact envelope and its request id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"code", "message", "requestId", "details"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    assert err["requestId"] and err["requestId"] == r.headers["x-request-id"]
    return err


def issue_paths(r: httpx.Response) -> list[str]:
    """The `details.issues[].path` of a 422, after checking each issue's shape."""
    issues = envelope_error(r, 422, "VALIDATION")["details"]["issues"]
    assert issues
    for issue in issues:
        assert set(issue) == {"path", "message"}, issue
        assert isinstance(issue["path"], str) and issue["path"]
        assert isinstance(issue["message"], str) and issue["message"]
    return [i["path"] for i in issues]


T = TypeVar("T")


def detached(model: type[T], key: str) -> T:
    """The row with this key, read in a session of its own and detached from it."""
    with new_session() as session:
        row = session.get(model, key)
        assert row is not None, f"no {model.__name__} {key}"
        session.expunge(row)
        return row


class FakePlatform:
    """Publishes everything, or refuses everything with a 4xx."""

    idempotent = True

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        return Preparation()

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Uploaded:
        if self.refuse:
            raise PlatformError("caption refused", transient=False, platform_code="bad_caption")
        return Uploaded(f"ext-{key}", f"https://platform.test/{key}")

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        return None


def publish_with(post_id: str, token: int, refuse: bool = False) -> str:
    """The worker's publish use case on this post, on a platform that takes (or refuses)
    everything; its outcome."""

    def adapter(account: SocialAccount, settings: Settings) -> PlatformAdapter:
        return FakePlatform(refuse)

    return run_publish(
        post_id, token, "w1", make_adapter=adapter, settings=Settings(lease_s=60)
    ).value


def contract_example(language: str) -> str:
    """The contract's SDK example in `language` (`python`, `ts`), as docs/api.md quotes the
    reference page: the code of its first such block, unquoted."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    found = re.search(rf"^> ```{language}\n(.*?)^> ```", doc, re.S | re.M)
    assert found, f"docs/api.md has no {language} example"
    return "\n".join(line.removeprefix(">").removeprefix(" ") for line in found[1].splitlines())


@contextmanager
def migration_database(name: str, base_url: str) -> Iterator[tuple[Config, Engine]]:
    """An empty database of its own (dropped after), for a migration test to walk up and
    down: its alembic config and an engine on it."""
    url = str(make_url(base_url).set(database=name))
    drop_database(url)
    ensure_database(url)
    db = create_engine(url)
    try:
        yield alembic_config(url), db
    finally:
        db.dispose()
        drop_database(url)
