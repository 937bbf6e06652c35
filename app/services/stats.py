"""GET /v1/admin/stats: user totals, sign-ups per day and active users of one app environment.

Nothing here reads the users table end to end: at a million users each figure is a few rows or
a short index range (migration 0015).
- live and deleted users: user_counts (migration 0004), verified: user_stat_counts — counters
  kept by triggers in the changes' own transactions, so they are exact;
- banned: a ban ends by its clock, with no write to count it out, so it is counted on the
  partial index ix_users_banned_live — the banned rows only, the expiry tested on each;
- sign-ups per day: user_signup_days, a counter per UTC day (trigger on insert);
- active users: user_active_days counts the users whose latest active UTC day each day is
  (user_activity, stamped by the session lookup, services/sessions, once a user a day); the
  active users of the last N days are the sum of N days' rows.
"""

from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.services import admin_auth
from app.services.admin_auth import AdminPrincipal

DAYS = 30

_TOTALS = text(
    "SELECT coalesce((SELECT live FROM user_counts WHERE app_id = :app AND env_id = :env), 0),"
    " coalesce((SELECT deleted FROM user_counts WHERE app_id = :app AND env_id = :env), 0),"
    " coalesce((SELECT verified FROM user_stat_counts WHERE app_id = :app AND env_id = :env), 0),"
    " (SELECT count(*) FROM users WHERE app_id = :app AND env_id = :env"
    "  AND banned AND deleted_at IS NULL AND (ban_expires IS NULL OR ban_expires > :now))"
)
_SIGNUPS = text(
    "SELECT day, signups FROM user_signup_days "
    "WHERE app_id = :app AND env_id = :env AND day >= :first"
)
_ACTIVE = text(
    "SELECT coalesce(sum(users) FILTER (WHERE day >= :day), 0)::bigint,"
    " coalesce(sum(users) FILTER (WHERE day >= :week), 0)::bigint,"
    " coalesce(sum(users), 0)::bigint"
    " FROM user_active_days WHERE app_id = :app AND env_id = :env AND day >= :month"
)


async def for_env(
    db: AsyncSession, principal: AdminPrincipal, app_ref: str | None, env_ref: str | None
) -> dict[str, Any]:
    """The stats of an environment of the caller's app (or of the app named, within reach)."""
    now = clock.now()
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=DAYS - 1)
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        env = await admin_auth.resolve_env(db, app, env_ref)
        where = {"app": app.id, "env": env.id}
        live, deleted, verified, banned = (await db.execute(_TOTALS, {**where, "now": now})).one()
        per_day = dict((await db.execute(_SIGNUPS, {**where, "first": first})).tuples().all())
        day, week, month = (
            await db.execute(
                _ACTIVE,
                {
                    **where,
                    "day": today,
                    "week": today - timedelta(days=6),
                    "month": first,
                },
            )
        ).one()
    return {
        "app_id": app.id,
        "env_id": env.id,
        "users": {"total": live, "verified": verified, "banned": banned, "deleted": deleted},
        "signups_per_day": [
            {"date": d, "count": per_day.get(d, 0)}
            for d in (first + timedelta(days=i) for i in range(DAYS))
        ],
        "active_users": {"day": day, "week": week, "month": month},
        "as_of": now,
    }
