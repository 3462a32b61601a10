"""The publish protocol's floor: the same work as the pipeline, with nothing around it.

`celery -A bench.floor worker` runs one plain Celery task under the publisher's own Celery
settings (bench.noop.make_app) that carries a post from `queued` to `published` with the
protocol's statements written by hand, on a raw psycopg connection per pool process (kept
open, autocommit: each statement is its own transaction, as each protocol step is):

1. the claim: one `UPDATE scheduled_posts ... FROM content_containers, social_accounts ...
   RETURNING` (status and token guard, owner, lease, attempt), which hands back the columns
   the upload needs;
2. the point of no return: one guarded `UPDATE` (still `publishing`, same token and owner,
   no upload started yet) stamping `upload_started_at`;
3. the upload: one `POST /v1/posts` to the sandbox, the request the product's sandbox adapter
   sends (same body, same `Idempotency-Key`), on one pooled HTTP client per process;
4. the record: one `UPDATE` to `published` with the platform's id and URL.

Each step also appends its row to `events` in the same statement (a data-modifying CTE), as
the product's transitions do (the transactional outbox): the floor writes what the product
writes, so the ratio prices the code around the work, not the work. What it leaves out is
everything that is not a row or a request: the ORM, the pooled-connection checkouts and
pre-pings, the log lines and metrics, the lease bookkeeping in Python, the webhook fan-out's
lookup of endpoints (the benchmark's tenant has none).

The broker is BENCH_BROKER_URL if set, else the deployment's REDIS_URL; the database and the
settings are the deployment's (DATABASE_URL, the lease, the platform timeout).
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import httpx
import psycopg
from psycopg.rows import dict_row
from sqlalchemy import make_url

from bench.noop import broker_url, make_app
from shared.events import new_event_id
from shared.kit.settings import get_settings
from shared.publishing.posts import EARLY_TOLERANCE

FLOOR_QUEUE: Final = "bench_floor"
FLOOR_TASK: Final = "bench.floor_publish"
# How its connections show in pg_stat_activity: the benchmark counts their backends' CPU.
APPLICATION_NAME: Final = "publisher.bench.floor"
# As the product's claim: a task that fired early waits for its post this many times at most.
MAX_EARLY_WAITS: Final = 5

# Each step's event carries the post as it is after the change, as shared.events.post_data
# builds it, and what the step adds (token, owner, attempt; the platform's id).
CLAIM: Final = """
    WITH claimed AS (
        UPDATE scheduled_posts AS p
        SET status = 'publishing', attempted_at = now(), owner = %(owner)s,
            lease_expires_at = now() + %(lease_s)s * interval '1 second',
            attempts = p.attempts + 1, updated_at = now()
        FROM content_containers AS c, social_accounts AS a
        WHERE p.id = %(id)s AND p.status = 'queued' AND p.dispatch_version = %(token)s
          AND p.scheduled_for <= now() + %(early_s)s * interval '1 second'
          AND c.id = p.container_id AND a.id = p.social_account_id
        RETURNING p.id, p.public_id, p.organization_id, p.container_id, p.social_account_id,
                  p.platform, p.mode, p.status, p.scheduled_for, p.attempts,
                  coalesce(p.caption_override, c.caption) AS caption, c.media,
                  p.first_comment_override AS first_comment, a.base_url,
                  a.status AS account_status
    ), logged AS (
        INSERT INTO events (public_id, organization_id, type, subject_type, subject_id, data)
        SELECT %(event)s, organization_id, 'post.claimed', 'scheduled_post', id,
               jsonb_build_object(
                   'scheduledPostId', public_id, 'containerId', container_id,
                   'socialAccountId', social_account_id, 'platform', platform,
                   'status', status,
                   'scheduledFor', to_char(scheduled_for AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   'token', %(token)s, 'owner', %(owner)s, 'attempt', attempts)
        FROM claimed
    )
    SELECT social_account_id, platform, mode, caption, media, first_comment, base_url,
           account_status
    FROM claimed
"""

# Why a claim found nothing: a task that fired early waits; anything else is stale.
EARLY: Final = """
    SELECT extract(epoch FROM scheduled_for - now()) AS wait_s FROM scheduled_posts
    WHERE id = %(id)s AND status = 'queued' AND dispatch_version = %(token)s
"""

POINT_OF_NO_RETURN: Final = """
    WITH begun AS (
        UPDATE scheduled_posts
        SET upload_started_at = now(),
            lease_expires_at = now() + %(lease_s)s * interval '1 second', updated_at = now()
        WHERE id = %(id)s AND status = 'publishing' AND dispatch_version = %(token)s
          AND owner = %(owner)s AND upload_started_at IS NULL
        RETURNING *
    ), logged AS (
        INSERT INTO events (public_id, organization_id, type, subject_type, subject_id, data)
        SELECT %(event)s, organization_id, 'post.upload_started', 'scheduled_post', id,
               jsonb_build_object(
                   'scheduledPostId', public_id, 'containerId', container_id,
                   'socialAccountId', social_account_id, 'platform', platform,
                   'status', status,
                   'scheduledFor', to_char(scheduled_for AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   'token', %(token)s, 'owner', %(owner)s)
        FROM begun
    )
    SELECT count(*) AS begun FROM begun
"""

RECORD: Final = """
    WITH recorded AS (
        UPDATE scheduled_posts
        SET status = CASE WHEN mode = 'draft' THEN 'draft' ELSE 'published' END,
            published_at = now(), external_id = %(external_id)s,
            external_url = %(external_url)s, last_error = NULL, owner = NULL,
            lease_expires_at = NULL, awaiting_since = NULL, poll_at = NULL, updated_at = now()
        WHERE id = %(id)s AND status = 'publishing' AND upload_started_at IS NOT NULL
        RETURNING *
    ), logged AS (
        INSERT INTO events (public_id, organization_id, type, subject_type, subject_id, data)
        SELECT %(event)s, organization_id, 'post.published', 'scheduled_post', id,
               jsonb_build_object(
                   'scheduledPostId', public_id, 'containerId', container_id,
                   'socialAccountId', social_account_id, 'platform', platform,
                   'status', status,
                   'scheduledFor', to_char(scheduled_for AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   'externalId', external_id)
               || jsonb_strip_nulls(jsonb_build_object('externalUrl', external_url))
        FROM recorded
    )
    SELECT count(*) AS recorded FROM recorded
"""


def database_dsn(url: str) -> str:
    """A libpq connection string from the deployment's SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


app = make_app("bench-floor", broker_url(), FLOOR_QUEUE)

# One of each per pool process, made on its first task (after the fork), kept open.
_conn: psycopg.Connection[dict[str, Any]] | None = None
_http: httpx.Client | None = None


def _db() -> psycopg.Connection[dict[str, Any]]:
    global _conn  # noqa: PLW0603 - one connection per pool process, by design
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(
            database_dsn(get_settings().database_url),
            autocommit=True,
            row_factory=dict_row,
            application_name=APPLICATION_NAME,
        )
    return _conn


def _client() -> httpx.Client:
    global _http  # noqa: PLW0603 - one pooled client per pool process, as the product's
    if _http is None:
        _http = httpx.Client(timeout=get_settings().platform_timeout_s)
    return _http


def _claim(conn: psycopg.Connection[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    for _ in range(MAX_EARLY_WAITS):
        row = conn.execute(CLAIM, {**params, "event": new_event_id()}).fetchone()
        if row is not None:
            return row
        early = conn.execute(EARLY, params).fetchone()
        if early is None:
            return {}
        time.sleep(max(0.0, float(early["wait_s"])))
    return {}


@app.task(name=FLOOR_TASK)
def floor_publish(post_id: str, token: int) -> str:
    """Claim, point of no return, upload, record: the outcome, as the product's task says it."""
    settings = get_settings()
    conn = _db()
    owner = f"bench-floor:{os.getpid()}"
    params: dict[str, Any] = {
        "id": post_id,
        "token": token,
        "owner": owner,
        "lease_s": settings.lease_s,
        "early_s": EARLY_TOLERANCE.total_seconds(),
    }
    post = _claim(conn, params)
    if not post:
        return "stale"
    if post["account_status"] != "connected":
        raise RuntimeError(f"the benchmark's account {post['social_account_id']} is not connected")
    begun = conn.execute(POINT_OF_NO_RETURN, {**params, "event": new_event_id()}).fetchone()
    if not begun or not begun["begun"]:
        return "canceled_before_upload"
    response = _client().post(
        f"{post['base_url'].rstrip('/')}/v1/posts",
        json={
            "accountId": post["social_account_id"],
            "platform": post["platform"],
            "mode": post["mode"],
            "caption": post["caption"],
            "media": post["media"],
            "firstComment": post["first_comment"],
        },
        headers={"Idempotency-Key": post_id},
    )
    response.raise_for_status()
    body = response.json()
    conn.execute(
        RECORD,
        {
            "id": post_id,
            "external_id": str(body["externalId"]),
            "external_url": body.get("externalUrl"),
            "event": new_event_id(),
        },
    )
    return "published"
