"""One trigram index for the admin list's `search` over e-mail, username, name and phone.

`search` was an OR of four ILIKEs, one per column's trigram index. The planner estimates such
an OR badly (the same users match in several columns: 'smith' estimated at 2.7x its matches),
and with the count's LIMIT that sends it to a sequential scan that stops early at the wrong
time. One index over the four fields joined by newlines gives one condition with its own
statistics (ANALYZE samples index expressions), one bitmap, and an estimate close enough for
the planner to choose well. The expression must stay identical to admin.SEARCH_TEXT.

The name trigram index served only `search`; this replaces it. (E-mail, username and phone
keep theirs, for their own filters.)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_TEXT = (
    "lower(email || E'\\n' || coalesce(username, '') || E'\\n' || coalesce(name, '') "
    "|| E'\\n' || coalesce(phone, ''))"
)


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX ix_users_search_trgm ON users USING gin (({SEARCH_TEXT}) gin_trgm_ops)"
    )
    op.execute("DROP INDEX ix_users_name_trgm")
    op.execute("ANALYZE users")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_users_name_trgm ON users USING gin (name gin_trgm_ops)")
    op.execute("DROP INDEX ix_users_search_trgm")
