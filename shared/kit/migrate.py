"""Schema migrations, applied by `publisher migrate` before any role starts."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.kit.db import ensure_database
from shared.kit.settings import get_settings

MIGRATIONS = Path(__file__).parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for this package's migrations, on `url` or DATABASE_URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(slug)s")
    # Escaped because Alembic's config interpolates `%`.
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def migrate(url: str | None = None) -> bool:
    """Create the database if missing and upgrade it to head; True if it was created."""
    target = url or get_settings().database_url
    created = ensure_database(target)
    command.upgrade(alembic_config(target), "head")
    return created
