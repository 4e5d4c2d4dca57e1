"""web_sessions and login_failures: login sessions and the login throttle shared by every web process

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("key", sa.String(64), primary_key=True),  # sha256 of the cookie token, never the token
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),  # epoch seconds
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
    )
    op.create_index("ix_web_sessions_username", "web_sessions", ["username"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(64), primary_key=True),  # sha256 of the throttle key
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
    )
    op.create_index("ix_login_failures_last", "login_failures", ["last"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_last", "login_failures")
    op.drop_table("login_failures")
    op.drop_index("ix_web_sessions_username", "web_sessions")
    op.drop_table("web_sessions")
