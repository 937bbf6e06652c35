"""Apps, environments, users, sessions and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SCHEMA = """
        CREATE TABLE apps (
            id text PRIMARY KEY,
            slug varchar(64) NOT NULL UNIQUE,
            name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE environments (
            id text PRIMARY KEY,
            app_id text NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            slug varchar(64) NOT NULL,
            name text NOT NULL,
            is_default boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX uq_environments_app_slug ON environments (app_id, slug);
        CREATE UNIQUE INDEX uq_environments_one_default ON environments (app_id) WHERE is_default;

        CREATE TABLE users (
            id text PRIMARY KEY,
            app_id text NOT NULL REFERENCES apps(id),
            env_id text NOT NULL REFERENCES environments(id),
            email text NOT NULL,
            email_verified boolean NOT NULL DEFAULT false,
            name text,
            image text,
            username text,
            display_username text,
            phone text,
            phone_verified boolean NOT NULL DEFAULT false,
            role varchar(32) NOT NULL DEFAULT 'user',
            password_hash text,
            password_changed_at timestamptz,
            banned boolean NOT NULL DEFAULT false,
            ban_reason text,
            ban_expires timestamptz,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            email_address_counter integer NOT NULL DEFAULT 0,
            password_hash_counter integer NOT NULL DEFAULT 0,
            disabled_counter integer NOT NULL DEFAULT 0,
            sessions_counter integer NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX uq_users_email_live ON users (app_id, env_id, lower(email))
            WHERE deleted_at IS NULL;
        CREATE UNIQUE INDEX uq_users_username_live ON users (app_id, env_id, username)
            WHERE deleted_at IS NULL AND username IS NOT NULL;
        CREATE INDEX ix_users_app_env_created ON users (app_id, env_id, created_at);
        CREATE INDEX ix_users_deleted_at ON users (deleted_at) WHERE deleted_at IS NOT NULL;

        CREATE TABLE sessions (
            id text PRIMARY KEY,
            family_id text NOT NULL,
            user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            token_hash bytea NOT NULL UNIQUE,
            refresh_token_hash bytea NOT NULL UNIQUE,
            expires_at timestamptz NOT NULL,
            refresh_expires_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at timestamptz,
            revoked_reason varchar(32),
            ip text,
            user_agent text
        );
        CREATE INDEX ix_sessions_user_live ON sessions (user_id) WHERE revoked_at IS NULL;
        CREATE INDEX ix_sessions_family ON sessions (family_id);

        CREATE TABLE audit_events (
            id text PRIMARY KEY,
            app_id text,
            env_id text,
            action varchar(64) NOT NULL,
            actor_type varchar(16) NOT NULL,
            actor_id text,
            target_user_id text,
            ip text,
            user_agent text,
            created_at timestamptz NOT NULL DEFAULT now(),
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb
        );
        CREATE INDEX ix_audit_app_id ON audit_events (app_id, id);
        CREATE INDEX ix_audit_target_user ON audit_events (target_user_id, id);
"""


def upgrade() -> None:
    # asyncpg runs one statement per call.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE audit_events, sessions, users, environments, apps")
