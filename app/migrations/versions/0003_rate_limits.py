"""Rate-limit counters shared by every node (used when REDIS_URL is not set).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # UNLOGGED: counters are cheap to lose in a crash and this table is written on every
    # sign-in attempt, so it skips the WAL.
    op.execute(
        "CREATE UNLOGGED TABLE rate_limits ("
        " key text PRIMARY KEY,"
        " window_start bigint NOT NULL,"
        " expires_at bigint NOT NULL,"
        " count integer NOT NULL)"
    )
    # Pruning deletes by expiry (see app/services/ratelimit.py PostgresStore).
    op.execute("CREATE INDEX ix_rate_limits_expires ON rate_limits (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE rate_limits")
