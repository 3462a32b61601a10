"""the audit log becomes the event log: every transition's event, with who asked

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 17:00:00

The audit log already held the API's transitions (schedule, cancel, reschedule) with the
actor, request and reason. The event log is the same rows under the names the webhooks use,
plus the worker's transitions and the accounts' events: one table, so the audit trail and
the timeline cannot disagree. Existing rows are kept, renamed to their event types, and
given event ids (hex, since their time order is the row order anyway).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# audit action -> event type
RENAMES = {
    "scheduled_post.schedule": "post.scheduled",
    "scheduled_post.cancel": "post.canceled",
    "scheduled_post.reschedule": "post.rescheduled",
}


def _append_only(table: str) -> str:
    return f"""
        CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{table} is append-only';
        END $$;
        CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {table}_append_only();
        """


def _rename(mapping: dict[str, str]) -> None:
    for before, after in mapping.items():
        op.execute(
            sa.text("UPDATE events SET type = :after WHERE type = :before").bindparams(
                before=before, after=after
            )
        )


def upgrade() -> None:
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.rename_table("audit_log", "events")
    op.alter_column("events", "action", new_column_name="type")
    op.alter_column("events", "target_type", new_column_name="subject_type")
    op.alter_column("events", "target_id", new_column_name="subject_id")
    op.alter_column("events", "details", new_column_name="data")
    op.execute("ALTER TABLE events RENAME CONSTRAINT pk_audit_log TO pk_events")
    op.execute(
        "ALTER TABLE events RENAME CONSTRAINT fk_audit_log_organization_id_organizations"
        " TO fk_events_organization_id_organizations"
    )
    op.execute("ALTER SEQUENCE audit_log_id_seq RENAME TO events_id_seq")
    op.drop_index("ix_audit_log_target", table_name="events")
    op.create_index("ix_events_subject", "events", ["subject_id", "id"])
    op.create_index("ix_events_organization", "events", ["organization_id", "id"])
    op.add_column("events", sa.Column("public_id", sa.String(length=30), nullable=True))
    op.execute(
        "UPDATE events SET public_id ="
        " 'evt_' || upper(substr(md5(id::text || random()::text), 1, 26))"
    )
    op.alter_column("events", "public_id", nullable=False)
    op.create_index("ux_events_public_id", "events", ["public_id"], unique=True)
    _rename(RENAMES)
    op.execute(_append_only("events"))


def downgrade() -> None:
    op.execute("DROP TRIGGER events_append_only ON events")
    op.execute("DROP FUNCTION events_append_only()")
    # Events the audit log never held go; the API's transitions go back to their actions.
    op.execute(
        sa.text("DELETE FROM events WHERE type NOT IN :kept").bindparams(
            sa.bindparam("kept", value=list(RENAMES.values()), expanding=True)
        )
    )
    _rename({after: before for before, after in RENAMES.items()})
    op.drop_index("ux_events_public_id", table_name="events")
    op.drop_column("events", "public_id")
    op.drop_index("ix_events_organization", table_name="events")
    op.drop_index("ix_events_subject", table_name="events")
    op.create_index("ix_audit_log_target", "events", ["subject_id", "created_at"])
    op.execute("ALTER SEQUENCE events_id_seq RENAME TO audit_log_id_seq")
    op.execute(
        "ALTER TABLE events RENAME CONSTRAINT fk_events_organization_id_organizations"
        " TO fk_audit_log_organization_id_organizations"
    )
    op.execute("ALTER TABLE events RENAME CONSTRAINT pk_events TO pk_audit_log")
    op.alter_column("events", "data", new_column_name="details")
    op.alter_column("events", "subject_id", new_column_name="target_id")
    op.alter_column("events", "subject_type", new_column_name="target_type")
    op.alter_column("events", "type", new_column_name="action")
    op.rename_table("events", "audit_log")
    op.execute(_append_only("audit_log"))
