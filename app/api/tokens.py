"""Tokens for other services: a JWT for the session (/v1/auth/token), introspection of a
session token by an app's API key (/v1/auth/introspect), and the public keys that verify the
JWTs (/.well-known/jwks.json). Thin: parse, call services/access_tokens, shape."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import (
    Config,
    From,
    Limits,
    Lookups,
    OwnCaller,
    bearer,
    rate_limit,
    record_caller,
)
from app.api.openapi import JSON_BODY, OWN_SESSION, SESSION, errors
from app.api.token_schemas import AccessTokenOut, IntrospectIn, IntrospectionOut, JwksOut
from app.errors import (
    AuthenticationRequired,
    DatabaseUnavailable,
    Forbidden,
    RateLimited,
    ValidationFailed,
)
from app.services import access_tokens, signing_keys
from app.services.admin_auth import AdminPrincipal
from app.services.signing_keys import KeyRing

router = APIRouter(tags=["auth"])


async def get_key_ring(request: Request) -> KeyRing:
    """The process's copy of the signing keys (signing_keys.KeyRing); reads the database."""
    ring: KeyRing = request.app.state.signing_keys
    return ring


async def get_introspector(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AdminPrincipal:
    caller = await access_tokens.authenticate_introspector(
        request.app.state.lookups, credentials.credentials if credentials else None
    )
    record_caller(request, None, caller.actor_id)
    return caller


Ring = Annotated[KeyRing, Depends(get_key_ring)]
Introspector = Annotated[AdminPrincipal, Depends(get_introspector)]


@router.post(
    "/v1/auth/token",
    name="token.create",
    summary="Exchange the session for a JWT access token",
    response_model=AccessTokenOut,
    responses=errors(OWN_SESSION, DatabaseUnavailable),
)
async def create_token(caller: OwnCaller, ring: Ring, settings: Config) -> dict[str, Any]:
    """A JWT for other services of the app to verify without calling Userkeep: signed with
    the current key of GET /.well-known/jwks.json, valid for JWT_TTL seconds (5 minutes by
    default). Revoking the session stops new tokens at once; one already issued verifies
    until its `exp`. For revocation that takes effect at once, use POST /v1/auth/introspect."""
    return await access_tokens.issue(ring, caller, settings)


@router.post(
    "/v1/auth/introspect",
    name="introspect",
    summary="Introspect a session token (RFC 7662)",
    dependencies=[Depends(rate_limit("introspect"))],
    response_model=IntrospectionOut,
    response_model_exclude_none=True,
    responses=errors(
        JSON_BODY,
        ValidationFailed("token", "Field required"),
        AuthenticationRequired("invalid or revoked API key"),
        SESSION,
        Forbidden("introspection takes an API key (ask_…), not a session token"),
        RateLimited,
        DatabaseUnavailable,
    ),
)
async def introspect(
    body: IntrospectIn,
    request: Request,
    caller: Introspector,
    lookups: Lookups,
    rules: Limits,
    origin: From,
) -> dict[str, Any]:
    """Whether a session token is live, answered from the session itself: a sign-out, ban,
    deletion or expiry shows on the very next call. Call with an API key of the app
    (`Authorization: Bearer ask_…`); a token of another app is inactive. An inactive answer
    is only `{"active": false}`. JSON bodies only."""
    # The app's session factory, not a request session (deps.get_db): one is opened only to
    # audit a failure, and the hot path of an active answer never makes one.
    sessions = request.app.state.sessions
    return await access_tokens.introspect(sessions, lookups, rules, origin, caller, body.token)


@router.get(
    "/.well-known/jwks.json",
    name="jwks.get",
    summary="The public keys that verify JWT access tokens",
    response_model=JwksOut,
    response_model_exclude_none=True,
    responses=errors(DatabaseUnavailable),
)
async def jwks(ring: Ring, response: Response) -> dict[str, Any]:
    """Every key a live token may name in its `kid`: the current one, the next one (published
    before it signs anything), and retired ones until the last token they signed has expired.
    Cacheable for 5 minutes; a verifier that meets an unknown `kid` should fetch it again."""
    response.headers["Cache-Control"] = f"public, max-age={signing_keys.JWKS_MAX_AGE}"
    return await ring.jwks()
