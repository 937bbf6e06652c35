"""E-mail verification, password reset and e-mail change: the one-time codes, and the app's
mail settings.

`email_codes` holds one row per (user, purpose): issuing a new code replaces the row, so only
the newest code and link of a purpose work. The code and the link token are stored only as
SHA-256 digests. `email` is the address the code was sent to: once the user's address is no
longer that one, the code is dead. `new_email` is the address an e-mail change goes to.

Apps gain `mail_from` and `link_base_url` (NULL = MAIL_FROM and PUBLIC_URL) and
`require_email_verification` (NULL = the REQUIRE_EMAIL_VERIFICATION setting).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE email_codes (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            purpose varchar(16) NOT NULL,
            email text NOT NULL,
            new_email text,
            code_hash bytea NOT NULL,
            token_hash bytea NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            CONSTRAINT uq_email_codes_user_purpose UNIQUE (user_id, purpose),
            CONSTRAINT uq_email_codes_token UNIQUE (token_hash)
        )
        """
    )
    op.execute("ALTER TABLE apps ADD COLUMN mail_from text")
    op.execute("ALTER TABLE apps ADD COLUMN link_base_url text")
    op.execute("ALTER TABLE apps ADD COLUMN require_email_verification boolean")


def downgrade() -> None:
    op.execute("ALTER TABLE apps DROP COLUMN require_email_verification")
    op.execute("ALTER TABLE apps DROP COLUMN link_base_url")
    op.execute("ALTER TABLE apps DROP COLUMN mail_from")
    op.execute("DROP TABLE email_codes")
