"""the approval gate: each project's policy, containers' decisions, saved schedule intents

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    now = sa.text("now()")
    false = sa.text("false")
    op.add_column(
        "projects",
        sa.Column("approval_required", sa.Boolean(), server_default=false, nullable=False),
    )
    op.add_column(
        "projects",
        sa.Column("approval_first_n", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.add_column("projects", sa.Column("auto_approve_after_s", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_projects_approval_first_n"), "projects", "approval_first_n BETWEEN 0 AND 50"
    )
    op.create_check_constraint(
        op.f("ck_projects_auto_approve_after_s"), "projects", "auto_approve_after_s > 0"
    )

    op.add_column(
        "content_containers",
        sa.Column("approval_required", sa.Boolean(), server_default=false, nullable=False),
    )
    op.add_column(
        "content_containers", sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "content_containers", sa.Column("decided_by", sa.String(length=64), nullable=True)
    )
    op.add_column(
        "content_containers",
        sa.Column("auto_approved", sa.Boolean(), server_default=false, nullable=False),
    )
    op.add_column("content_containers", sa.Column("decision_reason", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_content_containers_status"),
        "content_containers",
        "status IN ('pending_approval', 'completed', 'rejected')",
    )
    op.create_index(
        "ix_content_containers_pending",
        "content_containers",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending_approval'"),
    )

    op.create_table(
        "schedule_intents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("targets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sandbox_only", sa.Boolean(), nullable=False),
        sa.Column("actor_key_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.Column("scheduled_post_ids", postgresql.ARRAY(sa.String(length=64)), nullable=True),
        sa.Column("last_error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.CheckConstraint(
            "status IN ('blocked', 'promoted', 'canceled', 'rejected', 'failed')",
            name=op.f("ck_schedule_intents_status"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_schedule_intents_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_schedule_intents_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["container_id"],
            ["content_containers.id"],
            name=op.f("fk_schedule_intents_container_id_content_containers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_intents")),
    )
    op.create_index(
        "ix_schedule_intents_container", "schedule_intents", ["container_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_schedule_intents_container", table_name="schedule_intents")
    op.drop_table("schedule_intents")
    op.drop_index("ix_content_containers_pending", table_name="content_containers")
    op.drop_constraint(op.f("ck_content_containers_status"), "content_containers", type_="check")
    for column in ("decision_reason", "auto_approved", "decided_by", "decided_at"):
        op.drop_column("content_containers", column)
    op.drop_column("content_containers", "approval_required")
    op.drop_constraint(op.f("ck_projects_auto_approve_after_s"), "projects", type_="check")
    op.drop_constraint(op.f("ck_projects_approval_first_n"), "projects", type_="check")
    for column in ("auto_approve_after_s", "approval_first_n", "approval_required"):
        op.drop_column("projects", column)
