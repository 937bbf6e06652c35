"""Fresh credentials for the fuzz runs, written straight into the fuzzed database.

A run deletes, bans, signs out and revokes whatever it can reach, its own caller included, so
no credential lives long: the Schemathesis auth provider of fuzz/hooks.py asks for a new one
whenever the API answers 401 (see `retry_on`). Rows are inserted in SQL (like
tests/admin_support.py) so a new caller costs a millisecond, not a password hash.
"""

import asyncio
import itertools
import secrets
from datetime import timedelta
from functools import cache

import asyncpg

from app import clock
from app import db as database
from app.ids import Prefix, new_id
from app.security import passwords, tokens
from app.security.argon2_params import Argon2Parameters
from app.settings import Settings

ROLES = ("user", "admin", "api_key")
# Every minted user's password, so change-password can succeed (fuzz/hooks.py sends it).
PASSWORD = "fuzzing is a long passphrase"  # noqa: S105 - a throwaway database's users

_serial = itertools.count()


async def _mint(url: str, role: str) -> str:
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT a.id, e.id FROM apps a JOIN environments e "
                "ON e.app_id = a.id AND e.is_default WHERE a.slug = 'default'"
            )
            if row is None:
                raise RuntimeError("the default app is missing: has the server started?")
            app_id, env_id = row[0], row[1]
            if role == "api_key":
                return await _api_key(conn, app_id)
            return await _session(conn, app_id, env_id, role)
    finally:
        await conn.close()


async def _api_key(conn: asyncpg.Connection, app_id: str) -> str:
    secret = tokens.new_token(tokens.API_KEY_PREFIX)
    await conn.execute(
        "INSERT INTO api_keys (id, app_id, name, key_hash, prefix, last4) "
        "VALUES ($1, $2, 'fuzz', $3, $4, $5)",
        new_id(Prefix.API_KEY),
        app_id,
        tokens.digest(secret),
        secret[:8],
        secret[-4:],
    )
    return secret


@cache
def _password_hash() -> str:
    parameters = Argon2Parameters.from_settings(Settings(_env_file=None))
    digest: str = passwords.make_context(parameters).hash(PASSWORD)
    return digest


async def _session(conn: asyncpg.Connection, app_id: str, env_id: str, role: str) -> str:
    now = clock.now()
    user_id = new_id(Prefix.USER)
    await conn.execute(
        "INSERT INTO users (id, app_id, env_id, email, role, password_hash, password_changed_at, "
        "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)",
        user_id,
        app_id,
        env_id,
        f"fuzz-{role}-{next(_serial)}-{secrets.token_hex(4)}@example.com",
        role,
        _password_hash(),
        now,
    )
    token = tokens.new_token(tokens.SESSION_PREFIX)
    await conn.execute(
        "INSERT INTO sessions (id, family_id, user_id, token_hash, refresh_token_hash, "
        "expires_at, refresh_expires_at, family_expires_at, created_at, last_used_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $8)",
        new_id(Prefix.SESSION),
        new_id(Prefix.FAMILY),
        user_id,
        tokens.digest(token),
        tokens.digest(tokens.new_token(tokens.REFRESH_PREFIX)),
        now + timedelta(hours=1),
        now + timedelta(days=30),
        now,
    )
    return token


def mint(url: str, role: str) -> str:
    """A bearer secret for a new caller: a `user` or `admin` (of the default app, so it reaches
    every app) session token, or an `api_key` of the default app."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    # Called from Schemathesis' worker threads, none of which runs an event loop.
    return asyncio.run(_mint(url, role))
