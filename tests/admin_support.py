"""Rows for the admin tests, written straight in SQL: no password hashing, so a test can set
up admins, users, sessions and API keys of several apps in a few milliseconds."""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from app import clock
from app.ids import Prefix, new_id
from app.security import tokens
from app.security.secret_box import SecretBox
from app.services import webhooks
from tests.conftest import SECRET_KEY


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def default_app(pg: asyncpg.Connection) -> tuple[str, str]:
    """(app id, default env id) of the `default` app."""
    row = await pg.fetchrow(
        "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id AND e.is_default "
        "WHERE a.slug = 'default'"
    )
    assert row is not None
    return row[0], row[1]


async def make_app(pg: asyncpg.Connection, slug: str) -> tuple[str, str]:
    app_id, env_id = new_id(Prefix.APP), new_id(Prefix.ENV)
    await pg.execute(
        "INSERT INTO apps (id, slug, name) VALUES ($1, $2, $3)", app_id, slug, slug.title()
    )
    await pg.execute(
        "INSERT INTO environments (id, app_id, slug, name, is_default) "
        "VALUES ($1, $2, 'production', 'Production', true)",
        env_id,
        app_id,
    )
    return app_id, env_id


_emails = iter(range(10**9))


async def make_user(pg: asyncpg.Connection, tenant: tuple[str, str], **columns: Any) -> str:
    """A user row in (app, env); `columns` override the defaults (email, role, name, …)."""
    values: dict[str, Any] = {
        "id": new_id(Prefix.USER),
        "app_id": tenant[0],
        "env_id": tenant[1],
        "email": f"person{next(_emails)}@example.com",
        "created_at": clock.now(),
        "updated_at": clock.now(),
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await pg.execute(f"INSERT INTO users ({names}) VALUES ({marks})", *values.values())
    return str(values["id"])


async def make_session(pg: asyncpg.Connection, user_id: str) -> tuple[str, str]:
    """A live session of the user: (session token, session id)."""
    token = tokens.new_token(tokens.SESSION_PREFIX)
    session_id = new_id(Prefix.SESSION)
    now = clock.now()
    await pg.execute(
        "INSERT INTO sessions (id, family_id, user_id, token_hash, refresh_token_hash, "
        "expires_at, refresh_expires_at, family_expires_at, created_at, last_used_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $8)",
        session_id,
        new_id(Prefix.FAMILY),
        user_id,
        tokens.digest(token),
        tokens.digest(tokens.new_token(tokens.REFRESH_PREFIX)),
        now + timedelta(hours=1),
        now + timedelta(days=30),
        now,
    )
    return token, session_id


async def make_admin(pg: asyncpg.Connection, tenant: tuple[str, str], **columns: Any) -> str:
    """A session token of a new admin of the app."""
    user_id = await make_user(pg, tenant, role="admin", **columns)
    token, _ = await make_session(pg, user_id)
    return token


async def make_key(pg: asyncpg.Connection, app_id: str, revoked: bool = False) -> tuple[str, str]:
    """An API key of the app: (secret, key id)."""
    secret = tokens.new_token(tokens.API_KEY_PREFIX)
    key_id = new_id(Prefix.API_KEY)
    await pg.execute(
        "INSERT INTO api_keys (id, app_id, name, key_hash, prefix, last4, revoked_at) "
        "VALUES ($1, $2, 'test key', $3, $4, $5, $6)",
        key_id,
        app_id,
        tokens.digest(secret),
        secret[:8],
        secret[-4:],
        datetime.now(UTC) if revoked else None,
    )
    return secret, key_id


@dataclass
class World:
    """Two tenant apps (acme, globex) and the default app, with a caller of every kind."""

    acme: tuple[str, str]
    globex: tuple[str, str]
    default: tuple[str, str]
    callers: dict[str, dict[str, str]] = field(default_factory=dict)
    actor_ids: dict[str, str] = field(default_factory=dict)
    target: str = ""  # a live user of acme
    target_session: str = ""  # one of its live sessions
    deleted: str = ""  # a soft-deleted user of acme, inside the retention window
    spare_key: str = ""  # a live API key of acme, not used as a caller
    failed_job: int = 0  # a job of acme that failed for good
    webhook: str = ""  # a webhook endpoint of acme
    delivery: str = ""  # one delivery attempt to it


async def build_world(pg: asyncpg.Connection) -> World:
    async with pg.transaction():  # one commit (one WAL flush) instead of dozens
        return await _build_world(pg)


async def _build_world(pg: asyncpg.Connection) -> World:
    world = World(
        acme=await make_app(pg, "acme"),
        globex=await make_app(pg, "globex"),
        default=await default_app(pg),
    )
    now = clock.now()

    async def caller(kind: str, tenant: tuple[str, str], **columns: Any) -> None:
        user_id = await make_user(pg, tenant, **columns)
        token, _ = await make_session(pg, user_id)
        world.callers[kind] = auth(token)
        world.actor_ids[kind] = user_id

    world.callers["anonymous"] = {}
    await caller("user", world.acme)
    await caller("banned", world.acme, role="admin")
    await caller("deleted", world.acme, role="admin")
    await caller("other_admin", world.globex, role="admin")
    await caller("admin", world.acme, role="admin")
    await caller("root", world.default, role="admin")
    # Banned and deleted after their session was made, as a direct write would leave them.
    await pg.execute("UPDATE users SET banned = true WHERE id = $1", world.actor_ids["banned"])
    await pg.execute(
        "UPDATE users SET deleted_at = $2 WHERE id = $1", world.actor_ids["deleted"], now
    )
    secret, key_id = await make_key(pg, world.acme[0])
    world.callers["api_key"], world.actor_ids["api_key"] = auth(secret), key_id
    secret, key_id = await make_key(pg, world.acme[0], revoked=True)
    world.callers["revoked_key"], world.actor_ids["revoked_key"] = auth(secret), key_id

    world.target = await make_user(pg, world.acme, username="target", phone="+14155550123")
    _, world.target_session = await make_session(pg, world.target)
    world.deleted = await make_user(pg, world.acme, deleted_at=now - timedelta(days=1))
    _, world.spare_key = await make_key(pg, world.acme[0])
    world.failed_job = await make_failed_job(pg, world.acme[0])
    world.webhook, world.delivery = await make_webhook(pg, world.acme[0])
    return world


async def make_webhook(pg: asyncpg.Connection, app_id: str) -> tuple[str, str]:
    """An enabled endpoint of the app for user.created, with one failed delivery: (ids)."""
    webhook_id = new_id(Prefix.WEBHOOK)
    secret = SecretBox(SECRET_KEY.encode()).encrypt(
        webhooks.SECRET_PURPOSE, webhooks.new_secret(), webhook_id
    )
    now = clock.now()
    await pg.execute(
        "INSERT INTO webhook_endpoints (id, app_id, url, events, secret, created_at, updated_at) "
        "VALUES ($1, $2, 'https://hooks.acme.example/in', '{user.created}', $3, $4, $4)",
        webhook_id,
        app_id,
        secret,
        now,
    )
    delivery_id = new_id(Prefix.WEBHOOK_DELIVERY)
    await pg.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, attempt, status, "
        "http_status, created_at) VALUES ($1, $2, $3, 'user.created', 1, 'failed', 500, $4)",
        delivery_id,
        webhook_id,
        new_id(Prefix.AUDIT),
        now,
    )
    return webhook_id, delivery_id


async def make_failed_job(pg: asyncpg.Connection, app_id: str) -> int:
    """A job of the app held as failed, as pgqueuer leaves one (the `jobs` row follows by
    trigger)."""
    job_id: int = await pg.fetchval(
        "INSERT INTO pgqueuer (priority, entrypoint, status, payload, headers) "
        "VALUES (0, 'test.record', 'queued', '{}', $1::jsonb) RETURNING id",
        json.dumps({"userkeep_app_id": app_id}),
    )
    await pg.execute("UPDATE pgqueuer SET status = 'failed' WHERE id = $1", job_id)
    return job_id


async def audit_rows(pg: asyncpg.Connection, **where: Any) -> list[dict[str, Any]]:
    """The audit_events rows matching column = value, oldest first, metadata decoded."""
    conditions = " AND ".join(f"{name} = ${i}" for i, name in enumerate(where, start=1))
    query = "SELECT * FROM audit_events" + (f" WHERE {conditions}" if where else "")
    rows = await pg.fetch(query + " ORDER BY id", *where.values())
    return [{**row, "metadata": json.loads(row["metadata"])} for row in rows]
