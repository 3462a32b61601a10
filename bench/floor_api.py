"""The cancel endpoint's floor: `DELETE /v1/scheduled-posts/:id` with nothing around it.

One uvicorn process, started as `python -m bench.floor_api --port PORT` with the deployment's
environment and the uvicorn settings of `publisher api` (one process, no access log), serves a
sync FastAPI route (run in uvicorn's thread pool, as the product's) that does a cancel's work
by hand on a small pool of raw psycopg connections, in one transaction:

1. the API key: its row from `api_keys` by id, the SHA-256 of the presented secret compared
   in constant time with the stored hash (as shared.tenancy.keys does), env, revocation and
   the `publish:write` scope checked;
2. `SELECT ... FOR UPDATE` on the post, by the caller's organization and the post's wire id;
3. the `UPDATE` to `canceled`, with a new fencing token, as the product's cancel leaves it;
4. one `INSERT` into `events`: `post.canceled` with the key, the request and the reason;
5. `COMMIT`, then the product's answer (`{"id", "status", "canceledAt"}`).

A post past the point of no return, or terminal, answers 409 and changes nothing, as the
product does. What it leaves out: the ORM, the per-key rate limit in Redis, the separate
transaction the product's authentication runs in, the request-id, logging and metrics
middleware, the revoke of an ETA task (the benchmark's posts hold none) and the webhook
fan-out's lookup of endpoints (the benchmark's tenant has none).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import queue
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Final

import psycopg
from fastapi import Body, FastAPI, Header
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from bench.floor import database_dsn
from shared.events import new_event_id
from shared.kit.clock import iso
from shared.kit.errors import Unauthenticated
from shared.kit.settings import get_settings
from shared.tenancy.keys import has_scope, parse_token

# Connections this process opens at most; a request waits for one when all are out.
POOL_SIZE: Final = 4
TERMINAL: Final = ("published", "draft", "failed", "canceled")


class _Pool:
    """At most `size` autocommit-off psycopg connections, opened on demand, reused LIFO."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.idle: queue.LifoQueue[psycopg.Connection[dict[str, Any]]] = queue.LifoQueue()
        self.slots = queue.Queue[None]()
        for _ in range(size):
            self.slots.put(None)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        self.slots.get()
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(
                self.dsn, row_factory=dict_row, application_name="publisher.bench.floor_api"
            )
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        finally:
            if not conn.closed:
                self.idle.put(conn)
            self.slots.put(None)


_pool: _Pool | None = None


def _connections() -> _Pool:
    global _pool  # noqa: PLW0603 - one pool per process, made on the first request
    if _pool is None:
        _pool = _Pool(database_dsn(get_settings().database_url), POOL_SIZE)
    return _pool


class CancelIn(BaseModel):
    reason: str | None = None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


app = FastAPI(title="publisher bench floor", openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.delete("/v1/scheduled-posts/{post_id}")
def cancel(
    post_id: str,
    authorization: Annotated[str | None, Header()] = None,
    body: Annotated[CancelIn | None, Body()] = None,
) -> JSONResponse:
    """Cancel a queued post in one transaction: key, row lock, update, event, commit."""
    scheme, _, token = (authorization or "").partition(" ")
    try:
        env, key_id, secret = parse_token(token.strip())
    except Unauthenticated:
        return _error(401, "UNAUTHENTICATED", "Invalid API key")
    if scheme.lower() != "bearer":
        return _error(401, "UNAUTHENTICATED", "Authorization must be 'Bearer <key>'")
    reason = body.reason if body else None
    with _connections().connection() as conn:
        key = conn.execute(
            "SELECT organization_id, env, secret_hash, scopes, revoked_at FROM api_keys"
            " WHERE id = %s",
            (key_id,),
        ).fetchone()
        presented = hashlib.sha256(secret.encode()).digest()
        expected = bytes(key["secret_hash"]) if key is not None else b"\0" * 32
        if (
            key is None
            or not hmac.compare_digest(presented, expected)
            or key["env"] != env
            or key["revoked_at"] is not None
        ):
            conn.rollback()
            return _error(401, "UNAUTHENTICATED", "Invalid API key")
        if not has_scope(key["scopes"], "publish:write"):
            conn.rollback()
            return _error(403, "FORBIDDEN_SCOPE", "This key lacks the publish:write scope")
        organization = key["organization_id"]
        post = conn.execute(
            "SELECT id, status, upload_started_at FROM scheduled_posts"
            " WHERE organization_id = %s AND public_id = %s FOR UPDATE",
            (organization, post_id),
        ).fetchone()
        if post is None:
            conn.rollback()
            return _error(404, "NOT_FOUND", "Scheduled post not found")
        if post["status"] in TERMINAL or post["upload_started_at"] is not None:
            conn.rollback()
            return _error(409, "CONFLICT", f"Scheduled post is {post['status']}")
        done = conn.execute(
            """
            UPDATE scheduled_posts
            SET status = 'canceled', canceled_at = now(), cancel_reason = %(reason)s,
                dispatch_version = dispatch_version + 1, task_id = NULL, owner = NULL,
                lease_expires_at = NULL, updated_at = now()
            WHERE id = %(id)s
            RETURNING public_id, container_id, social_account_id, platform, status,
                      scheduled_for, canceled_at
            """,
            {"id": post["id"], "reason": reason},
        ).fetchone()
        assert done is not None
        data = {
            "scheduledPostId": done["public_id"],
            "containerId": done["container_id"],
            "socialAccountId": done["social_account_id"],
            "platform": done["platform"],
            "status": done["status"],
            "scheduledFor": iso(done["scheduled_for"]),
            "previous": post["status"],
        }
        conn.execute(
            "INSERT INTO events (public_id, organization_id, type, subject_type, subject_id,"
            " actor_key_id, request_id, reason, data)"
            " VALUES (%s, %s, 'post.canceled', 'scheduled_post', %s, %s, %s, %s, %s)",
            (
                new_event_id(),
                organization,
                post["id"],
                key_id,
                f"req_{uuid.uuid4().hex}",
                reason,
                Jsonb(data),
            ),
        )
        conn.commit()
    return JSONResponse(
        {"id": done["public_id"], "status": "canceled", "canceledAt": iso(done["canceled_at"])}
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.floor_api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # As `publisher api` runs it: one process, uvicorn's own loop and HTTP, no access log.
    uvicorn.run(
        "bench.floor_api:app",
        host=args.host,
        port=args.port,
        workers=1,
        log_level="info",
        log_config=None,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
