"""MFA: TOTP enrollments, recovery codes, the tokens between password and second factor.

`users.mfa_enabled` mirrors "has a confirmed enrollment" (kept in the same transaction by
app/services/mfa.py), so the session lookup and GET /me read it without a join.

`mfa_enrollments.secret` is a `v1.…` ciphertext of app/security/secret_box.py (purpose
"totp-secret", bound to the enrollment's id), never the base32 secret itself; one enrollment
per (user, type), pending while `confirmed_at` is NULL. `last_used_step` is the newest TOTP
time step accepted: a code is accepted once.

`mfa_recovery_codes` holds each unused code as SHA-256 of "user_id:code"; a used code's row is
deleted. `mfa_tokens` (`ukmt_…` as SHA-256) are the 5-minute, 5-try proofs of a right password
that POST /v1/auth/mfa/challenge exchanges for a session. All three go with their user
(ON DELETE CASCADE: purge).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL 11+ adds it without rewriting the table.
    op.execute("ALTER TABLE users ADD COLUMN mfa_enabled boolean NOT NULL DEFAULT false")
    op.execute(
        """
        CREATE TABLE mfa_enrollments (
            id text PRIMARY KEY,
            user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            type varchar(16) NOT NULL CONSTRAINT ck_mfa_enrollments_type CHECK (type IN ('totp')),
            secret text NOT NULL,
            confirmed_at timestamptz,
            last_used_step bigint,
            created_at timestamptz NOT NULL,
            last_used_at timestamptz
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_mfa_enrollments_user_type ON mfa_enrollments (user_id, type)"
    )
    op.execute(
        """
        CREATE TABLE mfa_recovery_codes (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            code_hash bytea NOT NULL,
            created_at timestamptz NOT NULL
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_mfa_recovery_codes_user_hash "
        "ON mfa_recovery_codes (user_id, code_hash)"
    )
    op.execute(
        """
        CREATE TABLE mfa_tokens (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            token_hash bytea NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX uq_mfa_tokens_hash ON mfa_tokens (token_hash)")
    op.execute("CREATE INDEX ix_mfa_tokens_user ON mfa_tokens (user_id)")


def downgrade() -> None:
    op.execute("DROP TABLE mfa_tokens")
    op.execute("DROP TABLE mfa_recovery_codes")
    op.execute("DROP TABLE mfa_enrollments")
    op.execute("ALTER TABLE users DROP COLUMN mfa_enabled")
