"""sessions.family_expires_at: the absolute end of a sign-in, carried across refreshes.

Before, every refresh gave the new pair a fresh REFRESH_TTL, so a family refreshed at least once
a month lived for ever. Existing families end REFRESH_FAMILY_TTL's default (90 days) after the
first session of the family was created.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE sessions ADD COLUMN family_expires_at timestamptz")
    op.execute(
        "UPDATE sessions s SET family_expires_at = f.started + interval '90 days' "
        "FROM (SELECT family_id, min(created_at) AS started FROM sessions GROUP BY family_id) f "
        "WHERE s.family_id = f.family_id"
    )
    op.execute("ALTER TABLE sessions ALTER COLUMN family_expires_at SET NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE sessions DROP COLUMN family_expires_at")
