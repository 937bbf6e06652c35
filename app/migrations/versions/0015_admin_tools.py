"""Admin power tools: impersonation sessions, and what GET /v1/admin/stats reads.

`sessions.impersonated_by`: the admin (ausr_ id) who holds the session; NULL for the user's own.
An admin who stops being one — demoted, banned, deleted, purged — loses the impersonations they
hold at once, whichever door or command made the change: a trigger revokes them (the session
lookup cannot check the admin without a second read on the hot path).

The stats read a handful of rows, never the users table end to end (1M users must answer in
milliseconds):
- `user_stat_counts`: live users with a verified e-mail, per environment, kept by row triggers in
  the change's transaction (the model of 0004's user_counts, which holds live and deleted).
- `user_signup_days`: accounts created per UTC day, per environment; incremented on insert and
  never decremented (a sign-up happened even when the account is later deleted or purged).
- `user_activity`: one row per user, the first session use of their latest active UTC day,
  written by the hot path's last-used stamp (services/sessions) at most once a user a day. No
  foreign key, so that `TRUNCATE users` needs no cascade: a purge deletes the row by trigger.
- `user_active_days`: how many users have each UTC day as their latest active day, kept by
  trigger on user_activity (a user moves from their previous day to today). Active users of
  the last N days are the sum of N days' rows — exact, since each user is in one day only.
  Counting user_activity's rows instead costs ~150 ms at 300,000 monthly active users. Each
  day is split into ACTIVE_SHARDS rows by user (hashtext & 15), so first requests of the day
  of different users seldom wait for one another's counter row.
- ix_users_banned_live: bans cannot be a trigger counter (a ban ends by its clock, with no write),
  so banned users are counted on this partial index — only the banned rows, with the expiry
  tested on each.

TRUNCATE bypasses row triggers: a TRUNCATE of users empties the four tables (statement trigger).

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE sessions ADD COLUMN impersonated_by text")
    op.execute(
        "CREATE INDEX ix_sessions_impersonated_by ON sessions (impersonated_by) "
        "WHERE impersonated_by IS NOT NULL"
    )
    # revoked_at is the database's now(), not app/clock's: the lookup only asks whether it is set.
    op.execute(
        """
        CREATE FUNCTION impersonations_end() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE sessions SET revoked_at = now(), revoked_reason = 'impersonator_revoked'
            WHERE impersonated_by = OLD.id AND revoked_at IS NULL;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_end_impersonations AFTER UPDATE OF role, banned, deleted_at "
        "ON users FOR EACH ROW WHEN (OLD.role = 'admin' AND (NEW.role <> 'admin' "
        "OR (NEW.banned AND NOT OLD.banned) "
        "OR (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL))) "
        "EXECUTE FUNCTION impersonations_end()"
    )
    op.execute(
        "CREATE TRIGGER users_end_impersonations_delete AFTER DELETE ON users "
        "FOR EACH ROW WHEN (OLD.role = 'admin') EXECUTE FUNCTION impersonations_end()"
    )
    op.execute(
        "CREATE TABLE user_stat_counts ("
        " app_id text NOT NULL,"
        " env_id text NOT NULL,"
        " verified bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (app_id, env_id))"
    )
    op.execute(
        "CREATE TABLE user_signup_days ("
        " app_id text NOT NULL,"
        " env_id text NOT NULL,"
        " day date NOT NULL,"
        " signups bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (app_id, env_id, day))"
    )
    op.execute(
        "CREATE TABLE user_activity ("
        " user_id text PRIMARY KEY,"
        " app_id text NOT NULL,"
        " env_id text NOT NULL,"
        " last_active_at timestamptz NOT NULL)"
    )
    op.execute(
        "CREATE TABLE user_active_days ("
        " app_id text NOT NULL,"
        " env_id text NOT NULL,"
        " day date NOT NULL,"
        " shard smallint NOT NULL,"
        " users bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (app_id, env_id, day, shard))"
    )
    op.execute(
        "CREATE INDEX ix_users_banned_live ON users (app_id, env_id, ban_expires) "
        "WHERE banned AND deleted_at IS NULL"
    )
    op.execute(
        """
        CREATE FUNCTION user_stats_verified_add(a text, e text, delta integer)
        RETURNS void LANGUAGE sql AS $$
            INSERT INTO user_stat_counts AS c (app_id, env_id, verified) VALUES (a, e, delta)
            ON CONFLICT (app_id, env_id) DO UPDATE SET verified = c.verified + EXCLUDED.verified
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION user_stats_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.email_verified AND OLD.deleted_at IS NULL
            THEN
                PERFORM user_stats_verified_add(OLD.app_id, OLD.env_id, -1);
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.email_verified AND NEW.deleted_at IS NULL
            THEN
                PERFORM user_stats_verified_add(NEW.app_id, NEW.env_id, 1);
            END IF;
            IF TG_OP = 'INSERT' THEN
                INSERT INTO user_signup_days AS d (app_id, env_id, day, signups)
                VALUES (NEW.app_id, NEW.env_id, (NEW.created_at AT TIME ZONE 'UTC')::date, 1)
                ON CONFLICT (app_id, env_id, day) DO UPDATE SET signups = d.signups + 1;
            END IF;
            IF TG_OP = 'DELETE' THEN
                DELETE FROM user_activity WHERE user_id = OLD.id;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_stats_insert_delete AFTER INSERT OR DELETE ON users "
        "FOR EACH ROW EXECUTE FUNCTION user_stats_track()"
    )
    # Only the updates that move a user in or out of the verified count.
    op.execute(
        "CREATE TRIGGER users_stats_update "
        "AFTER UPDATE OF app_id, env_id, email_verified, deleted_at ON users "
        "FOR EACH ROW WHEN (OLD.app_id IS DISTINCT FROM NEW.app_id "
        "OR OLD.env_id IS DISTINCT FROM NEW.env_id "
        "OR OLD.email_verified <> NEW.email_verified "
        "OR (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL)) "
        "EXECUTE FUNCTION user_stats_track()"
    )
    op.execute(
        """
        CREATE FUNCTION user_activity_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE user_active_days SET users = users - 1
                WHERE app_id = OLD.app_id AND env_id = OLD.env_id
                AND day = (OLD.last_active_at AT TIME ZONE 'UTC')::date
                AND shard = hashtext(OLD.user_id) & 15;
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                INSERT INTO user_active_days AS d (app_id, env_id, day, shard, users)
                VALUES (NEW.app_id, NEW.env_id, (NEW.last_active_at AT TIME ZONE 'UTC')::date,
                        hashtext(NEW.user_id) & 15, 1)
                ON CONFLICT (app_id, env_id, day, shard) DO UPDATE SET users = d.users + 1;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER user_activity_count AFTER INSERT OR DELETE OR UPDATE ON user_activity "
        "FOR EACH ROW EXECUTE FUNCTION user_activity_track()"
    )
    op.execute(
        """
        CREATE FUNCTION user_stats_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE user_stat_counts, user_signup_days, user_activity, user_active_days;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_stats_truncate AFTER TRUNCATE ON users "
        "FOR EACH STATEMENT EXECUTE FUNCTION user_stats_truncate()"
    )
    op.execute(
        "INSERT INTO user_stat_counts (app_id, env_id, verified) "
        "SELECT app_id, env_id, count(*) FROM users "
        "WHERE email_verified AND deleted_at IS NULL GROUP BY app_id, env_id"
    )
    op.execute(
        "INSERT INTO user_signup_days (app_id, env_id, day, signups) "
        "SELECT app_id, env_id, (created_at AT TIME ZONE 'UTC')::date, count(*) FROM users "
        "GROUP BY 1, 2, 3"
    )
    op.execute(
        "INSERT INTO user_activity (user_id, app_id, env_id, last_active_at) "
        "SELECT u.id, u.app_id, u.env_id, max(s.last_used_at) FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.last_used_at IS NOT NULL "
        "AND s.impersonated_by IS NULL GROUP BY u.id"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_stats_truncate ON users")
    op.execute("DROP TRIGGER users_stats_update ON users")
    op.execute("DROP TRIGGER users_stats_insert_delete ON users")
    op.execute("DROP FUNCTION user_stats_truncate()")
    op.execute("DROP TRIGGER user_activity_count ON user_activity")
    op.execute("DROP FUNCTION user_activity_track()")
    op.execute("DROP FUNCTION user_stats_track()")
    op.execute("DROP FUNCTION user_stats_verified_add(text, text, integer)")
    op.execute("DROP INDEX ix_users_banned_live")
    op.execute("DROP TABLE user_active_days")
    op.execute("DROP TABLE user_activity")
    op.execute("DROP TABLE user_signup_days")
    op.execute("DROP TABLE user_stat_counts")
    op.execute("DROP TRIGGER users_end_impersonations_delete ON users")
    op.execute("DROP TRIGGER users_end_impersonations ON users")
    op.execute("DROP FUNCTION impersonations_end()")
    op.execute("DROP INDEX ix_sessions_impersonated_by")
    op.execute("ALTER TABLE sessions DROP COLUMN impersonated_by")
