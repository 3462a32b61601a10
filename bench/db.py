"""The benchmark's own database: created and migrated per run, filled in bulk, dropped."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from shared.content.containers import create_container
from shared.kit.clock import utcnow
from shared.kit.migrate import migrate
from shared.models import Project
from shared.tenancy.tenants import create_tenant

DEFAULT_DATABASE_URL = "postgresql+psycopg://root@127.0.0.1:5432/publisher"
BENCH_DATABASE = "publisher_bench"


def default_url() -> str:
    """DATABASE_URL's server, with the benchmark's own database on it."""
    base = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    return base.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    project_id: str
    container_id: str
    token: str
    accounts: tuple[tuple[str, str], ...]  # (social account id, platform)


# Rows go in as the schedule endpoint would leave them (queued, token 1, no task yet), but in
# bulk: the benchmark measures what happens to posts once they exist, not how they arrive.
class BenchDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.name = str(make_url(url).database)
        self.engine: Engine | None = None

    def create(self) -> None:
        """A fresh database, migrated the way `publisher migrate` does it."""
        drop_database(self.url)
        migrate(self.url)
        self.engine = create_engine(
            self.url,
            pool_size=4,
            connect_args={"application_name": "publisher.bench"},
        )

    def drop(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        drop_database(self.url)

    @property
    def db(self) -> Engine:
        assert self.engine is not None, "create() first"
        return self.engine

    def make_tenant(self, sandbox_url: str) -> Tenant:
        with Session(self.db) as session, session.begin():
            t = create_tenant(session, "Bench", ["tiktok", "instagram"], sandbox_url=sandbox_url)
            project = session.get(Project, t.project_id)
            assert project is not None
            container = create_container(
                session,
                project,
                "Benchmark post",
                [("https://cdn.example.com/bench.mp4", "video")],
                now=utcnow(),
            )
            return Tenant(
                t.organization_id,
                t.project_id,
                container.id,
                t.key.token,
                tuple((a.id, a.platform) for a in t.social_accounts),
            )

    def _params(self, tenant: Tenant) -> dict[str, Any]:
        return {
            "org": tenant.organization_id,
            "prj": tenant.project_id,
            "cnt": tenant.container_id,
            "accounts": [a for a, _ in tenant.accounts],
            "platforms": [p for _, p in tenant.accounts],
        }

    def insert_at(
        self, tenant: Tenant, times: Sequence[datetime], *, task_held: bool = False
    ) -> list[str]:
        """One queued post due at each instant (any sub-second instant); their ids in order.

        `task_held`: the rows look dispatched already, so the dispatcher leaves them alone
        and a probe may run their publish protocol outside Celery.
        """
        sql = text(
            """
            WITH due AS (
                SELECT 'sp_' || gen_random_uuid() AS i, t, n
                FROM unnest(CAST(:times AS timestamptz[])) WITH ORDINALITY AS u(t, n)
            )
            INSERT INTO scheduled_posts (
                id, public_id, organization_id, project_id, container_id, social_account_id,
                platform, mode, status, scheduled_for, dispatch_version, attempts, created_at,
                updated_at, task_id, dispatched_at
            )
            SELECT i, i, :org, :prj, :cnt,
                   (CAST(:accounts AS text[]))[1 + (n % cardinality(CAST(:accounts AS text[])))],
                   (CAST(:platforms AS text[]))[1 + (n % cardinality(CAST(:accounts AS text[])))],
                   'publish', 'queued', t, 1, 0, now(), now(),
                   CASE WHEN :held THEN CAST(gen_random_uuid() AS text) END,
                   CASE WHEN :held THEN now() END
            FROM due
            ORDER BY n
            RETURNING id
            """
        )
        params = {**self._params(tenant), "times": list(times), "held": task_held}
        with self.db.begin() as conn:
            return [str(r[0]) for r in conn.execute(sql, params)]

    def insert_spread(
        self, tenant: Tenant, count: int, start: datetime, span: timedelta, seed: int
    ) -> None:
        """`count` queued posts due uniformly at random within [start, start + span)."""
        with self.db.begin() as conn:
            # setseed is per session: the same --seed gives the same schedule.
            conn.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
            conn.execute(
                text(
                    """
                    WITH spread AS (
                        SELECT 'sp_' || gen_random_uuid() AS i, g
                        FROM generate_series(1, :count) AS g
                    )
                    INSERT INTO scheduled_posts (
                        id, public_id, organization_id, project_id, container_id,
                        social_account_id, platform, mode, status, scheduled_for,
                        dispatch_version, attempts, created_at, updated_at
                    )
                    SELECT i, i, :org, :prj, :cnt,
                           (CAST(:accounts AS text[]))[1 + g % 2],
                           (CAST(:platforms AS text[]))[1 + g % 2],
                           'publish', 'queued',
                           CAST(:start AS timestamptz) + random() * CAST(:span AS interval),
                           1, 0, now(), now()
                    FROM spread
                    """
                ),
                {**self._params(tenant), "start": start, "span": span, "count": count},
            )
        with self.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # A deployment that grew to this size would have its statistics; give them to it.
            conn.execute(text("VACUUM ANALYZE scheduled_posts"))

    def truncate_posts(self) -> None:
        with self.db.begin() as conn:
            conn.execute(text("TRUNCATE scheduled_posts"))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def execute(self, sql: str, **params: Any) -> int:
        with self.db.begin() as conn:
            return conn.execute(text(sql), params).rowcount

    def backend_pids(self, application_name: str | None = None) -> list[int]:
        """The PostgreSQL backends serving this database right now; with `application_name`,
        only those of the clients that connected under that name."""
        return [
            int(r[0])
            for r in self.rows(
                "SELECT pid FROM pg_stat_activity WHERE datname = :d"
                " AND (CAST(:app AS text) IS NULL OR application_name = :app)",
                d=self.name,
                app=application_name,
            )
        ]
