"""case sharing, archive, review sign-off; audit events outlive purged cases

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# SQLite reflects the unnamed foreign key without a name; batch mode needs one to drop it.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _audit_case_fk() -> str:
    for fk in sa.inspect(op.get_bind()).get_foreign_keys("audit_events"):
        if fk["constrained_columns"] == ["case_id"]:
            return fk.get("name") or "fk_audit_events_case_id_cases"
    raise RuntimeError("audit_events.case_id foreign key not found")


def upgrade() -> None:
    op.create_table(
        "case_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "user_id"),
    )
    with op.batch_alter_table("case_shares") as batch:
        batch.create_index(batch.f("ix_case_shares_case_id"), ["case_id"])
        batch.create_index(batch.f("ix_case_shares_user_id"), ["user_id"])
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("signed_off", sa.Boolean(), nullable=False, server_default=sa.false()))
    fk_name = _audit_case_fk()
    with op.batch_alter_table("audit_events", naming_convention=NAMING) as batch:
        batch.drop_constraint(fk_name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("audit_events", naming_convention=NAMING) as batch:
        batch.create_foreign_key("fk_audit_events_case_id_cases", "cases", ["case_id"], ["id"])
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("signed_off")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("archived_at")
    op.drop_table("case_shares")
