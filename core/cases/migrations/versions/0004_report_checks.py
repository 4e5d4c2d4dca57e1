"""report checks: batch results of the radiology report checker

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_digest", sa.String(length=64), nullable=False),
        sa.Column("report_id", sa.String(length=200), nullable=False),
        sa.Column("checker", sa.String(length=16), nullable=False),
        sa.Column("has_error", sa.Boolean(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_digest", "report_id", "checker"),
    )
    with op.batch_alter_table("report_checks") as batch:
        batch.create_index(batch.f("ix_report_checks_source_digest"), ["source_digest"])


def downgrade() -> None:
    op.drop_table("report_checks")
