"""What `make bench` needs in the bench database besides the seeded users (bench.seed_users):
live sessions with known tokens, users that can really sign in, and fastapi-users' own users
and access tokens. Every function is idempotent: it adds what is missing, so a second run (or
a run on the seeded million) starts at once.

Tokens are derived from their index (SHA-256 of a fixed label), so nothing but the database has
to be kept between runs, and no real secret is ever in play.
"""

import base64
import hashlib
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from app.ids import Prefix, new_id
from app.security.argon2_params import Argon2Parameters
from app.security.passwords import make_context
from app.settings import get_settings

BENCH_AGENT = "userkeep-bench"
SIGNIN_PASSWORD = "userkeep bench sign-in password 7f3a"
SIGNIN_EMAIL = "bench-signin-{}@example.com"
FASTAPI_USERS_SCHEMA = "fastapi_users"


def _token(label: str, index: int) -> str:
    digest = hashlib.sha256(f"userkeep-bench-{label}:{index}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # 43 chars, as token_urlsafe


def session_token(index: int) -> str:
    return "ukst_" + _token("session", index)


def fastapi_users_token(index: int) -> str:
    return _token("fastapi-users", index)


def api_key() -> str:
    return "ask_" + _token("api-key", 0)


async def seed_api_key(conn: asyncpg.Connection) -> str:
    """An API key of the default app (introspection's caller); the same secret every run."""
    secret = api_key()
    app_id, _ = await default_env(conn)
    await conn.execute(
        "INSERT INTO api_keys (id, app_id, name, key_hash, prefix, last4) "
        "VALUES ($1, $2, 'bench introspection', $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
        new_id(Prefix.API_KEY),
        app_id,
        sha256(secret),
        secret[:8],
        secret[-4:],
    )
    return secret


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


async def default_env(conn: asyncpg.Connection) -> tuple[str, str]:
    app_id, env_id = await conn.fetchrow(
        "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id AND e.is_default "
        "WHERE a.slug = 'default'"
    )
    return app_id, env_id


async def seed_sessions(conn: asyncpg.Connection, count: int) -> int:
    """Sessions 0..count-1 (token `session_token(i)`), on live, unbanned users of the default
    app, never expiring during a bench. Returns how many there are."""
    existing = {
        bytes(r[0])
        for r in await conn.fetch(
            "SELECT token_hash FROM sessions WHERE user_agent = $1", BENCH_AGENT
        )
    }
    missing = [i for i in range(count) if sha256(session_token(i)) not in existing]
    if missing:
        started = time.monotonic()
        app_id, env_id = await default_env(conn)
        owners = [
            r[0]
            for r in await conn.fetch(
                "SELECT id FROM users WHERE app_id = $1 AND env_id = $2 AND deleted_at IS NULL "
                "AND NOT banned ORDER BY id LIMIT $3",
                app_id,
                env_id,
                count,
            )
        ]
        await _copy_sessions(
            conn,
            [
                (owners[i % len(owners)], session_token(i), "ukrt_" + _token("refresh", i))
                for i in missing
            ],
            timedelta(days=3650),
            BENCH_AGENT,
        )
        await conn.execute("VACUUM ANALYZE sessions")
        print(f"seeded {len(missing):,} sessions in {time.monotonic() - started:.0f} s")
    return count


async def freshen_sessions(conn: asyncpg.Connection, indexes: list[int]) -> None:
    """Make the driven sessions live and used within the last minute, at times spread over it:
    the bench measures the steady state, in which each session's last-used stamp is written
    once a minute, so 1/60 of the sessions come due each second. (Stamped all at one instant,
    every session came due in the same second a minute later, and a row running then
    measured 10,000 stamp writes at once: a ~1 s stall, p99 ~0.4-1.3 s.)"""
    await conn.execute(
        "UPDATE sessions SET last_used_at = now() - random() * interval '60 seconds', "
        "revoked_at = NULL, revoked_reason = NULL, "
        "expires_at = greatest(expires_at, now() + interval '1 day') "
        "WHERE token_hash = ANY($1::bytea[])",
        [sha256(session_token(i)) for i in indexes],
    )


async def seed_signin_users(conn: asyncpg.Connection, count: int) -> list[str]:
    """`count` users of the default app whose password is SIGNIN_PASSWORD (one argon2id hash
    with Userkeep's parameters, shared: verifying costs the same). Returns their e-mails."""
    app_id, env_id = await default_env(conn)
    emails = [SIGNIN_EMAIL.format(i) for i in range(count)]
    have = {
        r[0]
        for r in await conn.fetch(
            "SELECT email FROM users WHERE app_id = $1 AND env_id = $2 AND deleted_at IS NULL "
            "AND email = ANY($3::text[])",
            app_id,
            env_id,
            emails,
        )
    }
    missing = [e for e in emails if e not in have]
    if missing:
        # The served app's own parameters, so sign-in measures a verify and never a re-hash.
        context = make_context(Argon2Parameters.from_settings(get_settings()))
        password_hash = context.hash(SIGNIN_PASSWORD)
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "users",
            records=[
                (new_id(Prefix.USER), app_id, env_id, e, True, password_hash, now, now)
                for e in missing
            ],
            columns=[
                "id",
                "app_id",
                "env_id",
                "email",
                "email_verified",
                "password_hash",
                "created_at",
                "updated_at",
            ],
        )
        print(f"seeded {len(missing):,} users who can sign in")
    await conn.execute(
        "UPDATE users SET banned = false, ban_reason = NULL, ban_expires = NULL "
        "WHERE app_id = $1 AND email = ANY($2::text[]) AND banned",
        app_id,
        emails,
    )
    return emails


async def sample_user_ids(conn: asyncpg.Connection, count: int) -> list[str]:
    """Random live users of the default app (what the Faroe endpoint serves by default)."""
    app_id, env_id = await default_env(conn)
    rows = await conn.fetch(
        "SELECT id FROM users TABLESAMPLE SYSTEM (10) WHERE app_id = $1 AND env_id = $2 "
        "AND deleted_at IS NULL LIMIT $3",
        app_id,
        env_id,
        count,
    )
    if len(rows) < count:  # a small table: sampling 10% of its pages finds too few
        rows = await conn.fetch(
            "SELECT id FROM users WHERE app_id = $1 AND env_id = $2 AND deleted_at IS NULL "
            "ORDER BY random() LIMIT $3",
            app_id,
            env_id,
            count,
        )
    return [r[0] for r in rows]


async def sample_emails(conn: asyncpg.Connection, count: int) -> list[str]:
    """Addresses of random live users of the default app and environment."""
    app_id, env_id = await default_env(conn)
    query = (
        "SELECT email FROM users {} WHERE app_id = $1 AND env_id = $2 AND deleted_at IS NULL "
        "{} LIMIT $3"
    )
    rows = await conn.fetch(query.format("TABLESAMPLE SYSTEM (10)", ""), app_id, env_id, count)
    if len(rows) < count:  # a small table: sampling 10% of its pages finds too few
        rows = await conn.fetch(query.format("", "ORDER BY random()"), app_id, env_id, count)
    return [r[0] for r in rows]


async def forgot_addresses(conn: asyncpg.Connection, count: int) -> list[str]:
    """`count` addresses for forgot-password, known and unknown mixed: half of live users (a
    reset mail would go out), half of nobody (the job would find no one), shuffled. The
    request reads neither kind, so both must cost the same."""
    known = await sample_emails(conn, count - count // 2)
    # Shaped like the seeded addresses (first.last<n>@example<n % 100>.com), but "no.one"
    # is no seeded name: none of them has an account.
    unknown = [f"no.one{i}@example{i % 100}.com" for i in range(count - len(known))]
    addresses = known + unknown
    random.Random(7).shuffle(addresses)
    return addresses


# ---- fastapi-users ------------------------------------------------------------------------


async def seed_fastapi_users(conn: asyncpg.Connection, users: int, tokens: int) -> None:
    """fastapi-users' tables (made by `bench.ref_fastapi_users setup`) filled like ours:
    `users` users and `tokens` access tokens (token `fastapi_users_token(i)`)."""
    table = f'{FASTAPI_USERS_SCHEMA}."user"'
    have = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
    started = time.monotonic()
    password_hash = make_context(Argon2Parameters.from_settings(get_settings())).hash(
        "not used by the bench"
    )
    batch = 100_000
    for start in range(have, users, batch):
        n = min(batch, users - start)
        await conn.copy_records_to_table(
            "user",
            schema_name=FASTAPI_USERS_SCHEMA,
            records=(
                (
                    uuid.uuid4(),
                    f"user{i}@example{i % 100}.com",
                    password_hash,
                    True,
                    False,
                    i % 2 == 0,
                )
                for i in range(start, start + n)
            ),
            columns=["id", "email", "hashed_password", "is_active", "is_superuser", "is_verified"],
        )
    if users > have:
        print(f"seeded {users - have:,} fastapi-users users in {time.monotonic() - started:.0f} s")
    existing = {
        r[0]
        for r in await conn.fetch(f"SELECT token FROM {FASTAPI_USERS_SCHEMA}.accesstoken")  # noqa: S608
    }
    missing = [i for i in range(tokens) if fastapi_users_token(i) not in existing]
    if missing:
        owners = [
            r[0]
            for r in await conn.fetch(f"SELECT id FROM {table} ORDER BY id LIMIT $1", tokens)  # noqa: S608
        ]
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "accesstoken",
            schema_name=FASTAPI_USERS_SCHEMA,
            records=((fastapi_users_token(i), now, owners[i % len(owners)]) for i in missing),
            columns=["token", "created_at", "user_id"],
        )
        print(f"seeded {len(missing):,} fastapi-users access tokens")
    if users > have or missing:
        await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute(f"VACUUM ANALYZE {FASTAPI_USERS_SCHEMA}.accesstoken")


async def freshen_fastapi_users(conn: asyncpg.Connection, indexes: list[int]) -> None:
    """DatabaseStrategy only accepts tokens younger than lifetime_seconds."""
    await conn.execute(
        f"UPDATE {FASTAPI_USERS_SCHEMA}.accesstoken SET created_at = now() "  # noqa: S608
        "WHERE token = ANY($1::text[])",
        [fastapi_users_token(i) for i in indexes],
    )


# ---- refresh and sign-up: each request uses up what it is sent --------------------------------

SIGNUP_PASSWORD = "userkeep bench sign-up password 2c9e"
SIGNUP_EMAIL = "bench-signup-{}-{}@example.com"  # run nonce, index: no collision across runs
REFRESH_AGENT = "userkeep-bench-refresh-{}"  # run nonce: the seeded sessions of one run


def refresh_token(nonce: str, index: int) -> str:
    return "ukrt_" + _token(f"refresh-{nonce}", index)


async def seed_refresh_sessions(conn: asyncpg.Connection, nonce: str, count: int) -> list[str]:
    """`count` live sessions, each of its own family, on verified live unbanned users of the
    default app (cycled), with refresh tokens `refresh_token(nonce, i)`: a refresh token is
    good once (a second use revokes its family), so each request of the refresh row needs one
    of its own. Returns the tokens; `forget_refresh_sessions` removes them and what they
    became."""
    app_id, env_id = await default_env(conn)
    owners = [
        r[0]
        for r in await conn.fetch(
            "SELECT id FROM users WHERE app_id = $1 AND env_id = $2 AND deleted_at IS NULL "
            "AND NOT banned AND email_verified ORDER BY id LIMIT $3",
            app_id,
            env_id,
            count,
        )
    ]
    tokens = [refresh_token(nonce, i) for i in range(count)]
    sessions = [
        (owners[i % len(owners)], f"ukst_refresh-{nonce}-{i}", token)
        for i, token in enumerate(tokens)
    ]
    await _copy_sessions(conn, sessions, timedelta(days=1), REFRESH_AGENT.format(nonce))
    return tokens


async def _copy_sessions(
    conn: asyncpg.Connection, sessions: list[tuple[str, str, str]], life: timedelta, agent: str
) -> None:
    """(user id, session token, refresh token) rows as live sessions, each of a family of its
    own, lasting `life`, tagged with `agent`: one COPY."""
    now = datetime.now(UTC)
    far = now + life
    records = (
        (
            new_id(Prefix.SESSION),
            new_id(Prefix.FAMILY),
            user_id,
            sha256(session),
            sha256(refresh),
            far,
            far,
            far,
            now,
            now,
            agent,
        )
        for user_id, session, refresh in sessions
    )
    columns = ["id", "family_id", "user_id", "token_hash", "refresh_token_hash", "expires_at"]
    columns += ["refresh_expires_at", "family_expires_at", "created_at", "last_used_at"]
    await conn.copy_records_to_table("sessions", records=records, columns=[*columns, "user_agent"])


async def forget_refresh_sessions(conn: asyncpg.Connection, nonce: str) -> int:
    """Delete the sessions `seed_refresh_sessions(nonce)` made and the ones refreshing them
    issued (the same families), and the run's `session.refresh` audit rows. Returns how many
    sessions."""
    families = await conn.fetch(
        "SELECT family_id FROM sessions WHERE user_agent = $1", REFRESH_AGENT.format(nonce)
    )
    ids = [r[0] for r in families]
    deleted: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM sessions WHERE family_id = ANY($1::text[]) RETURNING 1) "
        "SELECT count(*) FROM gone",
        ids,
    )
    await conn.execute(
        "DELETE FROM audit_events WHERE action = 'session.refresh' AND user_agent = $1",
        BENCH_AGENT,
    )
    await conn.execute("VACUUM (ANALYZE) sessions")  # as after the sign-up row (forget_signups)
    return deleted


async def forget_signups(conn: asyncpg.Connection, nonce: str) -> int:
    """Delete the users the sign-up row made (their sessions and codes go with them) and their
    audit rows. Returns how many users."""
    pattern = SIGNUP_EMAIL.format(nonce, "%")
    gone = await conn.fetch("DELETE FROM users WHERE email LIKE $1 RETURNING id", pattern)
    ids = [r[0] for r in gone]
    await conn.execute("DELETE FROM audit_events WHERE target_user_id = ANY($1::text[])", ids)
    # The rows after this one must not pay for it: the users' trigram GIN indexes keep the
    # inserts in a pending list that every search scans until a vacuum merges it (the search
    # row fell from ~200 to 23 req/s after the sign-up row), and the deletes leave dead rows.
    await conn.execute("VACUUM (ANALYZE) users")
    return len(ids)
