"""Admin API: API keys, and the indexes behind the admin user list and search.

- `api_keys`: `ask_` secrets stored only as SHA-256, scoped to one app.
- `pg_trgm` GIN indexes on e-mail, username, name and phone: the case-insensitive partial
  matches (`ILIKE '%…%'`) of `GET /v1/admin/users` use them instead of scanning every row.
- One btree per sort key, `(app_id, key, id)`: a page of the list (and its keyset cursor) is an
  index range scan in the requested order. The key expressions must stay identical to the ones
  of `services/admin.SORT_KEYS`, or the planner cannot use them.
- A partial index of the (few) banned users, for the `banned=true` filter, and one of the
  live users per (app, env), so the unfiltered `total` is an index-only count.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SCHEMA = """
        CREATE TABLE api_keys (
            id text PRIMARY KEY,
            app_id text NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            name text NOT NULL,
            key_hash bytea NOT NULL UNIQUE,
            prefix varchar(16) NOT NULL,
            last4 varchar(4) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at timestamptz,
            created_by text
        );
        CREATE INDEX ix_api_keys_app ON api_keys (app_id, id);

        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX ix_users_email_trgm ON users USING gin (email gin_trgm_ops);
        CREATE INDEX ix_users_username_trgm ON users USING gin (username gin_trgm_ops);
        CREATE INDEX ix_users_name_trgm ON users USING gin (name gin_trgm_ops);
        CREATE INDEX ix_users_phone_trgm ON users USING gin (phone gin_trgm_ops);

        CREATE INDEX ix_users_sort_created ON users (app_id, created_at, id);
        CREATE INDEX ix_users_sort_updated ON users (app_id, updated_at, id);
        CREATE INDEX ix_users_sort_email ON users (app_id, lower(email), id);
        CREATE INDEX ix_users_sort_name ON users (app_id, coalesce(lower(name), ''), id);
        CREATE INDEX ix_users_sort_username ON users (app_id, coalesce(username, ''), id);
        CREATE INDEX ix_users_banned ON users (app_id, ban_expires) WHERE banned;
        CREATE INDEX ix_users_live ON users (app_id, env_id) WHERE deleted_at IS NULL;

        CREATE INDEX ix_audit_actor ON audit_events (actor_id, id)
"""

DROP = """
        DROP INDEX ix_audit_actor;
        DROP INDEX ix_users_live;
        DROP INDEX ix_users_banned;
        DROP INDEX ix_users_sort_username;
        DROP INDEX ix_users_sort_name;
        DROP INDEX ix_users_sort_email;
        DROP INDEX ix_users_sort_updated;
        DROP INDEX ix_users_sort_created;
        DROP INDEX ix_users_phone_trgm;
        DROP INDEX ix_users_name_trgm;
        DROP INDEX ix_users_username_trgm;
        DROP INDEX ix_users_email_trgm;
        DROP TABLE api_keys
"""


def _run(script: str) -> None:
    # asyncpg runs one statement per call.
    for statement in script.split(";"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(SCHEMA)


def downgrade() -> None:
    # pg_trgm stays: other objects of the database may use it.
    _run(DROP)
