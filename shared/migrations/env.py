"""Alembic environment: runs against `sqlalchemy.url` from the config, else DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from shared.kit.settings import get_settings
from shared.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    # Behind a transaction pooler nothing may be prepared server-side (shared/kit/db.py
    # `connect_args`); the migration's own timeouts stay PostgreSQL's defaults either way.
    pooled = get_settings().database_pooler == "transaction"
    connectable = create_engine(
        url,
        connect_args={
            "application_name": "publisher.migrate",
            **({"prepare_threshold": None} if pooled else {}),
        },
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()
