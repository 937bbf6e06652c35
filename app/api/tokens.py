"""Tokens for other services: a JWT for the session (/v1/auth/token), introspection of a
session token by an app's API key (/v1/auth/introspect), and the public keys that verify the
JWTs (/.well-known/jwks.json). Thin: parse, call services/access_tokens, shape."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError

from app.api import forms
from app.api.deps import From, Limits, OwnCaller, bearer, rate_limit, record_caller
from app.api.openapi import OWN_SESSION, SESSION, errors
from app.api.token_schemas import AccessTokenOut, IntrospectIn, IntrospectionOut, JwksOut
from app.errors import (
    AuthenticationRequired,
    BadRequest,
    DatabaseUnavailable,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.services import access_tokens, signing_keys
from app.services.signing_keys import KeyRing

router = APIRouter(tags=["auth"])


async def get_key_ring(request: Request) -> KeyRing:
    """The process's copy of the signing keys (signing_keys.KeyRing); reads the database."""
    ring: KeyRing = request.app.state.signing_keys
    return ring


Ring = Annotated[KeyRing, Depends(get_key_ring)]


async def get_introspector_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The API key of the call, not yet checked: `introspect` reads it with the token."""
    return await access_tokens.introspector_key(
        request.app.state.lookups, credentials.credentials if credentials else None
    )


IntrospectorKey = Annotated[str, Depends(get_introspector_key)]
# RFC 7662 says form-encoded; JSON too, like every other route here.
_FORM_FIELDS = 4
_INTROSPECT_BODY = {
    "required": True,
    "content": {
        media: {"schema": IntrospectIn.model_json_schema()} for media in (forms.JSON, forms.FORM)
    },
}
NOT_JSON_OR_FORM = "request body must be application/json or application/x-www-form-urlencoded"


async def _introspect_in(request: Request) -> IntrospectIn:
    """The body as JSON or, as RFC 7662 has it, urlencoded; 415 for another media type, 400
    for an unreadable body, 422 (the envelope of every route) for a bad field."""
    media, body = forms.media_type(request), await request.body()
    try:
        if forms.is_json(media):
            return IntrospectIn.model_validate_json(body)
        if media == forms.FORM:
            try:
                fields = forms.parse_form(body, _FORM_FIELDS)
            except ValueError as exc:
                raise BadRequest("request body is not a valid urlencoded form") from exc
            return IntrospectIn.model_validate(fields)
    except ValidationError as exc:
        # The app's handler turns these into the 422 envelope (and bad JSON into a 400),
        # with the same field paths as for a body FastAPI parsed.
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from exc
    raise UnsupportedMediaType(NOT_JSON_OR_FORM)


@router.post(
    "/v1/auth/token",
    name="token.create",
    summary="Exchange the session for a JWT access token",
    response_model=AccessTokenOut,
    responses=errors(OWN_SESSION, DatabaseUnavailable),
)
async def create_token(caller: OwnCaller, request: Request) -> dict[str, Any]:
    """A JWT for other services of the app to verify without calling Userkeep: signed with
    the current key of GET /.well-known/jwks.json, valid for JWT_TTL seconds (5 minutes by
    default). Revoking the session stops new tokens at once; one already issued verifies
    until its `exp`. For revocation that takes effect at once, use POST /v1/auth/introspect."""
    # The app's key ring and settings straight from its state, not as dependencies: each
    # dependency FastAPI solves costs more than this whole function's own work.
    state = request.app.state
    return await access_tokens.issue(state.signing_keys, caller, state.settings)


@router.post(
    "/v1/auth/introspect",
    name="introspect",
    summary="Introspect a session token (RFC 7662)",
    dependencies=[Depends(rate_limit("introspect"))],
    response_model=IntrospectionOut,
    response_model_exclude_none=True,
    openapi_extra={"requestBody": _INTROSPECT_BODY},
    responses=errors(
        BadRequest("request body is not valid JSON"),
        BadRequest("request body is not a valid urlencoded form"),
        PayloadTooLarge,
        UnsupportedMediaType(NOT_JSON_OR_FORM),
        ValidationFailed("token", "Field required"),
        AuthenticationRequired("invalid or revoked API key"),
        SESSION,
        Forbidden("introspection takes an API key (ask_…), not a session token"),
        RateLimited,
        DatabaseUnavailable,
    ),
)
async def introspect(
    request: Request, key: IntrospectorKey, rules: Limits, origin: From
) -> dict[str, Any]:
    """Whether a session token is live, answered from the session itself: a sign-out, ban,
    deletion or expiry shows on the very next call. Call with an API key of the app
    (`Authorization: Bearer ask_…`); a token of another app is inactive. An inactive answer
    is only `{"active": false}`. The body is JSON or, as RFC 7662 has it, urlencoded
    (`token=ukst_…`)."""
    body = await _introspect_in(request)
    state = request.app.state
    # The app's session factory, not a request session (deps.get_db): one is opened only to
    # audit a failure, and the hot path of an active answer never makes one.
    caller, answer = await access_tokens.introspect(
        state.sessions, state.lookups, rules, origin, key, body.token
    )
    record_caller(request, None, caller.actor_id)
    return answer


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
