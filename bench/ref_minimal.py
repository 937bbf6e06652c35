"""The ceiling for GET /v1/auth/me: a minimal FastAPI app on raw asyncpg, same work, nothing else.

    BENCH_DATABASE_URL=postgresql+asyncpg://… uvicorn bench.ref_minimal:app --workers 2

`GET /me` with `Authorization: Bearer <session token>`: SHA-256 of the token, one query joining
`sessions` and `users` on Userkeep's own tables, the same checks (revoked, expired, deleted,
effective ban), the same last-used stamp at most once a minute (the same conditional UPDATE)
and a JSON answer with the same user fields as Userkeep's `/v1/auth/me`. No ORM,
no dependency injection, no response model, no middleware: what FastAPI + asyncpg cost at least.
"""

import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import FastAPI, Request, Response

QUERY = """
SELECT s.id AS session_id, s.last_used_at, s.expires_at, s.revoked_at,
       u.id, u.app_id, u.env_id, u.email, u.email_verified, u.name, u.image, u.username,
       u.display_username, u.phone, u.phone_verified, u.role, u.password_changed_at, u.banned,
       u.ban_reason, u.ban_expires, u.metadata::text AS metadata, u.created_at, u.updated_at,
       u.deleted_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1
"""
STAMP = (
    "UPDATE sessions SET last_used_at = $2 "
    "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)"
)
TIMES = ("password_changed_at", "ban_expires", "created_at", "updated_at", "deleted_at")


def connect_args(url: str) -> dict:
    """asyncpg.connect() keywords from a postgresql+asyncpg:// URL (socket dir in ?host=)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    args = {
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password) if parts.password else None,
        "database": parts.path.lstrip("/") or None,
        "host": parts.hostname or query.get("host"),
        "port": parts.port or query.get("port"),
    }
    return {k: v for k, v in args.items() if v is not None}


def unauthorized(type_: str, message: str) -> Response:
    body = json.dumps({"error": message, "code": 401, "type": type_})
    return Response(body, status_code=401, media_type="application/json")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["BENCH_DATABASE_URL"]
    size = int(os.environ.get("DB_POOL_SIZE", "10"))
    overflow = int(os.environ.get("DB_MAX_OVERFLOW", "10"))
    app.state.pool = await asyncpg.create_pool(
        **connect_args(url), min_size=size, max_size=size + overflow
    )
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/me")
async def me(request: Request) -> Response:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return unauthorized("authentication_required", "authentication required")
    digest = hashlib.sha256(header[7:].encode()).digest()
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(QUERY, digest)
        if row is None:
            return unauthorized("authentication_required", "invalid session token")
        now = datetime.now(UTC)
        if (
            row["revoked_at"] is not None
            or row["expires_at"] <= now
            or row["deleted_at"] is not None
        ):
            return unauthorized("session_expired", "session expired")
        banned = row["banned"] and (row["ban_expires"] is None or row["ban_expires"] > now)
        if banned:
            body = json.dumps({"error": "user is banned", "code": 403, "type": "user_banned"})
            return Response(body, status_code=403, media_type="application/json")
        stale = now - timedelta(minutes=1)
        if row["last_used_at"] is None or row["last_used_at"] < stale:
            await conn.execute(STAMP, row["session_id"], now, stale)
    user = {k: row[k] for k in list(row.keys())[4:]}
    for key in TIMES:
        if user[key] is not None:
            user[key] = user[key].isoformat().replace("+00:00", "Z")
    user["metadata"] = json.loads(user["metadata"])
    user["banned"] = False
    user["ban_reason"] = user["ban_expires"] = None
    return Response(
        json.dumps(user), media_type="application/json", headers={"Cache-Control": "no-store"}
    )
