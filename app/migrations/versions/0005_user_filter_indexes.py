"""Indexes for the admin list's `role` and `email_verified` filters.

Without them, "the admins" or "the unverified users" of a million-user app is a scan of every
row, for the page (~130 ms) and again for its total. The values repeat, so btree deduplication
keeps each index small (~7 MB per million users); the planner uses them when the value asked
for is rare and scans the sort index when it is common.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_users_role ON users (app_id, role)")
    op.execute("CREATE INDEX ix_users_email_verified ON users (app_id, email_verified)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_users_email_verified")
    op.execute("DROP INDEX ix_users_role")
