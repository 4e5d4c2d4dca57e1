"""data_sources, and assets read by reference from one (assets.source_id, assets.item)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(32), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("readers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("source_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("item", sa.Text(), nullable=True))
        batch.create_foreign_key("fk_assets_source_id_data_sources", "data_sources", ["source_id"], ["id"])
        batch.create_index("ix_assets_source_id", ["source_id"])


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.drop_index("ix_assets_source_id")
        batch.drop_constraint("fk_assets_source_id_data_sources", type_="foreignkey")
        batch.drop_column("item")
        batch.drop_column("source_id")
    op.drop_table("data_sources")
