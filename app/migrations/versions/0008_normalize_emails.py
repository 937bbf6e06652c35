"""Store e-mail addresses in their normalised form (email-validator's `normalized`).

The NFC and NFD spellings of `josé@exämple.com` were two different strings, so one mailbox
could hold two accounts. From now on the service stores the normalised form; this rewrites the
rows written before, where that creates no clash. A row whose normalised address is already
another live account's (in the same app and environment) is left as it was and reported on
the log (logger `userkeep.migrations`): an operator merges or renames one of the two.

Only rows that can change are visited: a non-ASCII character, an upper-case letter after the
"@", or an IDNA (xn--) domain. The normalisation is written out here, not imported from the
app, so later changes to the app cannot change what this migration did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("userkeep.migrations")


def normalized(email: str) -> str:
    try:
        result: str = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError:
        result = unicodedata.normalize("NFC", email)
    return result


def upgrade() -> None:
    conn = op.get_bind()
    candidates = conn.execute(
        sa.text(
            "SELECT id, app_id, env_id, email, deleted_at IS NULL AS live FROM users "
            "WHERE email ~ '[^\\x01-\\x7f]' OR email ~ '@.*[A-Z]' OR email ~* '@(.*\\.)?xn--' "
            "ORDER BY id"
        )
    ).all()
    clashes = 0
    for row in candidates:
        target = normalized(row.email)
        if target == row.email:
            continue
        if row.live:
            taken_by = conn.execute(
                sa.text(
                    "SELECT id FROM users WHERE app_id = :app AND env_id = :env AND id <> :id "
                    "AND deleted_at IS NULL AND lower(email) = lower(:email)"
                ),
                {"app": row.app_id, "env": row.env_id, "id": row.id, "email": target},
            ).scalar()
            if taken_by is not None:
                clashes += 1
                log.warning(
                    "e-mail of user %s not normalised: %r is already user %s's address "
                    "(one mailbox, two accounts: merge or rename one)",
                    row.id,
                    target,
                    taken_by,
                )
                continue
        conn.execute(
            sa.text("UPDATE users SET email = :email WHERE id = :id"),
            {"email": target, "id": row.id},
        )
    if clashes:
        log.warning("%d e-mail address(es) left unnormalised because of a clash", clashes)


def downgrade() -> None:
    """Nothing to undo: the normalised form is the same mailbox."""
