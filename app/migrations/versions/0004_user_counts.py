"""Per-environment user counts, kept by triggers, for the admin list's unfiltered `total`.

Counting a million index entries on every page view costs ~50 ms; reading one row per
environment costs nothing. Row triggers keep the counts in the same transaction as the change,
so the total stays exact. (TRUNCATE bypasses row triggers: truncate user_counts with users.)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE user_counts ("
        " app_id text NOT NULL,"
        " env_id text NOT NULL,"
        " live bigint NOT NULL DEFAULT 0,"
        " deleted bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (app_id, env_id))"
    )
    op.execute(
        """
        CREATE FUNCTION user_counts_add(a text, e text, is_live boolean, delta integer)
        RETURNS void LANGUAGE sql AS $$
            INSERT INTO user_counts AS c (app_id, env_id, live, deleted)
            VALUES (a, e, CASE WHEN is_live THEN delta ELSE 0 END,
                          CASE WHEN is_live THEN 0 ELSE delta END)
            ON CONFLICT (app_id, env_id) DO UPDATE
            SET live = c.live + EXCLUDED.live, deleted = c.deleted + EXCLUDED.deleted
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION user_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                PERFORM user_counts_add(OLD.app_id, OLD.env_id, OLD.deleted_at IS NULL, -1);
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                PERFORM user_counts_add(NEW.app_id, NEW.env_id, NEW.deleted_at IS NULL, 1);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_count_insert_delete AFTER INSERT OR DELETE ON users "
        "FOR EACH ROW EXECUTE FUNCTION user_counts_track()"
    )
    # Only updates that move a user between counts (most updates touch other columns).
    op.execute(
        "CREATE TRIGGER users_count_update AFTER UPDATE OF app_id, env_id, deleted_at ON users "
        "FOR EACH ROW WHEN (OLD.app_id IS DISTINCT FROM NEW.app_id "
        "OR OLD.env_id IS DISTINCT FROM NEW.env_id "
        "OR (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL)) "
        "EXECUTE FUNCTION user_counts_track()"
    )
    op.execute(
        "INSERT INTO user_counts (app_id, env_id, live, deleted) "
        "SELECT app_id, env_id, count(*) FILTER (WHERE deleted_at IS NULL), "
        "count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM users GROUP BY app_id, env_id"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_count_update ON users")
    op.execute("DROP TRIGGER users_count_insert_delete ON users")
    op.execute("DROP FUNCTION user_counts_track()")
    op.execute("DROP FUNCTION user_counts_add(text, text, boolean, integer)")
    op.execute("DROP TABLE user_counts")
