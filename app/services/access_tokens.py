"""What other services of an app check a user with: a JWT access token, verified offline against
the JWKS, or RFC 7662 introspection of a session token, answered from the live session.

A JWT is the session's word for JWT_TTL seconds: revoking the session (sign-out, ban, deletion)
stops new ones at once (the token request is a session request like any other), but one already
issued verifies until its `exp`. Introspection reads the session as every authenticated request
does (sessions.lookup_sql and sessions.accept), so it sees a revocation at once.
"""

import random
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import LookupPool
from app.errors import AuthenticationRequired, Forbidden, SessionExpired, UserBanned
from app.security import tokens
from app.services import admin_auth, audit, sessions
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.services.ratelimit import Rules
from app.services.sessions import Principal
from app.services.signing_keys import KeyRing
from app.settings import Settings

INACTIVE: dict[str, Any] = {"active": False}
# A failed introspection is audited at most this often per API key and reason: a resource
# server looping on a bad token writes one row a minute, not one per request.
FAILURE_AUDIT_EVERY = 60


async def issue(ring: KeyRing, principal: Principal, settings: Settings) -> dict[str, Any]:
    """A JWT of JWT_TTL seconds for the caller's live session (the route's bearer check has
    refused a banned, deleted or signed-out user already)."""
    signer = await ring.signer()
    user = principal.user
    issued_at = int(clock.now().timestamp())
    claims = {
        "iss": settings.public_url,
        "aud": user.app_id,
        "sub": user.id,
        "sid": principal.session_id,
        "role": user.role,
        "email": user.email,
        "email_verified": user.email_verified,
        "iat": issued_at,
        "exp": issued_at + settings.jwt_ttl,
        # Lets a resource server remember tokens it has seen (replay, single use) if it wants.
        # RFC 7519 asks only that it be unique, and the signature makes it unforgeable: 128
        # bits of the process's PRNG (reseeded in every forked child) are enough.
        "jti": f"{random.getrandbits(128):032x}",
    }
    token = jwt.encode(
        claims, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid}
    )
    return {"access_token": token, "token_type": "Bearer", "expires_in": settings.jwt_ttl}


async def introspector_key(lookups: LookupPool, credential: str | None) -> str:
    """The API key a call to introspect is made with. Only an API key may introspect: it is
    what a resource server holds, and it names the one app whose tokens it may see. A session
    token is checked like anywhere else (401 when it is not a live one), then refused with
    403: a user must not probe other users' tokens. The key itself is checked by `introspect`,
    in the statement that reads the token's session."""
    if credential and credential.startswith(tokens.API_KEY_PREFIX):
        return credential
    await sessions.authenticate(lookups, credential)
    raise Forbidden("introspection takes an API key (ask_…), not a session token")


# The API key and the token's session in one statement: a resource server introspects on every
# request it serves, and two lookups (two pool checkouts, two round trips) cost a third of one.
_INTROSPECT = (
    f"SELECT {admin_auth.KEY_COLUMNS}, t.* FROM {admin_auth.KEY_FROM} "  # noqa: S608  # constant
    f"LEFT JOIN ({sessions.lookup_sql('$2')}) t ON true WHERE k.key_hash = $1"
)


async def introspect(
    writes: async_sessionmaker[AsyncSession],
    lookups: LookupPool,
    rules: Rules,
    origin: Origin,
    key: str,
    token: str,
) -> tuple[AdminPrincipal, dict[str, Any]]:
    """The caller (401 for a bad API key) and RFC 7662's answer for a session token: active
    with its claims, or only inactive — never why, so the caller learns nothing of a token it
    does not own. A token of another app is inactive even for the default app's keys: a
    resource server of one app must not accept another app's users. `writes` opens a session
    only for a failure's audit row."""
    principal: Principal | None = None
    async with lookups.connection() as conn:
        row = await conn.fetchrow(_INTROSPECT, tokens.digest(key), tokens.digest(token))
        caller = await admin_auth.accept_key(conn, row)
        try:
            principal = await sessions.accept(conn, row)
        except AuthenticationRequired:
            pass  # never ours: audited below
        except (SessionExpired, UserBanned):
            # Routine (a client holding a token past its end); the ban or sign-out has its
            # own audit row.
            return caller, INACTIVE
    if principal is None or principal.user.app_id != caller.app_id:
        reason = "unknown_token" if principal is None else "other_app"
        await _failed(writes, rules, origin, caller, reason)
        return caller, INACTIVE
    user = principal.user
    return caller, {
        "active": True,
        "sub": user.id,
        "app_id": user.app_id,
        "env_id": user.env_id,
        "sid": principal.session_id,
        "role": user.role,
        "email": user.email,
        "email_verified": user.email_verified,
        "exp": int(principal.session_expires_at.timestamp()),
        "iat": int(principal.session_created_at.timestamp()),
    }


async def _failed(
    writes: async_sessionmaker[AsyncSession],
    rules: Rules,
    origin: Origin,
    caller: AdminPrincipal,
    reason: str,
) -> None:
    """An audit row for a token that was never ours or belongs elsewhere: a misconfigured or
    probing resource server. The throttle is a shared one-time key, so under a flood of bad
    tokens this costs one statement per request, and the rate limit bounds those."""
    if not await rules.once_per(
        f"introspect-failed:{caller.actor_id}:{reason}", FAILURE_AUDIT_EVERY
    ):
        return
    async with writes() as db, db.begin():
        audit.record(
            db,
            "token.introspection_failed",
            origin=origin,
            app_id=caller.app_id,
            actor_type=caller.actor_type,
            actor_id=caller.actor_id,
            metadata={"reason": reason},
        )
