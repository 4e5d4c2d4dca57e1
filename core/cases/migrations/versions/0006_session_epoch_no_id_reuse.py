"""users.session_epoch (sessions end on password, role or active changes); ids never reused on SQLite

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ["users", "cases", "case_shares", "assets", "model_runs", "messages", "reviews", "case_reports",
          "report_checks", "audit_events", "adapters"]


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"))
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return  # PostgreSQL's sequences never hand out an id twice
    # AUTOINCREMENT can only be given when a table is created: re-create each one (env.py turns
    # foreign key enforcement off for the copy and checks the result).
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    # Cases purged before this revision left their ids in the audit trail: start above those too.
    high = bind.execute(sa.text("SELECT max(m) FROM (SELECT max(id) AS m FROM cases "
                                "UNION ALL SELECT max(case_id) FROM audit_events)")).scalar()
    if high:
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'cases'"))
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('cases', :seq)"), {"seq": high})


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_epoch")
