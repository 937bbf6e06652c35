"""POST /v1/faroe/actions: the Faroe user-server action invocation endpoint.

The answers are Faroe's, not the JSON error envelope's: results and action errors are HTTP 200
with the exact bytes of app.faroe.protocol; an invalid request is 400, a missing, bad or
replayed signature 401, an unconfigured endpoint 503, each with an empty body. The route
returns Response objects itself, so none of these passes through the envelope handlers. (A
database or Redis outage still reaches the app's handler and is its usual 503.)
"""

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import Headers

from app import clock
from app.api.deps import get_origin, rate_limit
from app.faroe import protocol
from app.security.passwords import PasswordHasher
from app.services import faroe
from app.services.ratelimit import PostgresStore, Rules
from app.settings import Settings

log = logging.getLogger("userkeep.faroe")

router = APIRouter(prefix="/v1/faroe", tags=["faroe"], dependencies=[Depends(rate_limit("faroe"))])

TIMESTAMP_HEADER = "X-Faroe-Timestamp"
SIGNATURE_HEADER = "X-Faroe-Signature"
NONCE_HEADER = "X-Faroe-Nonce"
SIGNATURE_VERSION = "v1="
# Optional. Faroe sends byte-identical requests in normal use (two session checks of one user in
# one second, from one node or several); a signature is served once, so a client that may do so
# adds a random nonce, which the signature then covers. 16-64 URL-safe characters.
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
MAX_SKEW_SECONDS = 300
# A seen signature is kept this long past the end of its timestamp's window, so that a node whose
# clock runs behind the store's (Redis expires keys on its own clock) still finds it.
SEEN_MARGIN_SECONDS = 60

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    """Log a configuration problem once per process, not once per request."""
    if key not in _warned:
        _warned.add(key)
        log.error(message, *args)


def expected_signature(secret: bytes, timestamp: str, body: bytes, nonce: str | None = None) -> str:
    """`v1=` + hex HMAC-SHA256(secret, timestamp + "." + body) — what the Faroe side sends; with
    a nonce, HMAC-SHA256(secret, timestamp + "." + nonce + "." + body)."""
    signed = timestamp.encode("ascii") + b"." + (b"" if nonce is None else nonce.encode() + b".")
    mac = hmac.new(secret, signed + body, hashlib.sha256)
    return SIGNATURE_VERSION + mac.hexdigest()


@dataclass(frozen=True)
class Signed:
    """A request whose signature checked out; served only if this is its first use."""

    key: str
    ttl: int
    now: float


def _verify(settings: Settings, headers: Headers, body: bytes) -> Response | Signed | None:
    """The (empty-bodied) answer refusing the request; else its signature, to be used once;
    None when nothing is signed (FAROE_AUTH=none)."""
    if settings.faroe_auth == "none":
        # Announced at start (settings.unsafe_modes), not here on first use. Nothing is signed,
        # so there is nothing to recognise a replay by: that mode relies on the private network.
        return None
    secret = settings.faroe_secret.get_secret_value() if settings.faroe_secret else ""
    if not secret:
        _warn_once(
            "no-secret",
            "POST /v1/faroe/actions answers 503: FAROE_SECRET is not set (set it to the key the "
            "Faroe server signs with, or FAROE_AUTH=none on a private network)",
        )
        return Response(status_code=503)
    timestamp = headers.get(TIMESTAMP_HEADER) or ""
    signature = headers.get(SIGNATURE_HEADER) or ""
    nonce = headers.get(NONCE_HEADER)
    # Unix seconds: ASCII digits only (no sign, no fraction, no spaces), of a sane length.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or not signature:
        return Response(status_code=401)
    if nonce is not None and not NONCE.fullmatch(nonce):
        return Response(status_code=401)
    now = clock.now().timestamp()
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        return Response(status_code=401)
    expected = expected_signature(secret.encode("utf-8"), timestamp, body, nonce)
    # Header values arrive as latin-1 text; compare bytes, in constant time.
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("latin-1")):
        return Response(status_code=401)
    # A captured request must not work a second time (a replayed delete_user would delete a
    # restored user again). Only a valid signature is remembered, so only the holder of the
    # secret can add keys; each is kept until its timestamp can no longer pass the check above.
    # The signature covers the nonce, so two identical bodies signed with two nonces are two
    # requests, however close together.
    ttl = int(timestamp) + MAX_SKEW_SECONDS + SEEN_MARGIN_SECONDS - int(now)
    return Signed(f"faroe:{timestamp}:{expected}", ttl, now)


_JSON_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["action", "arguments"],
                "properties": {
                    "action": {"type": "string", "enum": list(protocol.ACTION_NAMES)},
                    "arguments": {
                        "type": "object",
                        "description": "the action's arguments; bytes are padded standard "
                        "base64, counters int32 numbers",
                    },
                },
            },
            "example": {
                "action": "get_user_by_email_address",
                "arguments": {"email_address": "user@example.com"},
            },
        }
    },
    "description": "The raw JSON body the Faroe server sends (no Content-Type required). The "
    "signature covers these exact bytes.",
}

_RESULT_SCHEMA = {
    "type": "object",
    "required": ["ok", "action_invocation_id"],
    "properties": {
        "ok": {"type": "boolean"},
        "action_invocation_id": {"type": "string", "minLength": 24, "maxLength": 24},
        "values": {"type": "object", "description": 'with ok: `{}` or `{"user": {…}}`'},
        "error_code": {
            "type": "string",
            "description": "without ok: user_not_found, email_address_already_used, "
            "internal_error or internal_conflict",
        },
    },
}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A result or an action error, in Faroe's exact byte format.",
        "content": {
            "application/json": {
                "schema": _RESULT_SCHEMA,
                "example": {
                    "ok": False,
                    "action_invocation_id": "x2mhb6rjz8wvq3ntkfpa5ceo",
                    "error_code": "user_not_found",
                },
            }
        },
    },
    400: {
        "description": "Invalid request (not the protocol's JSON, or an argon2id password hash "
        "out of the ARGON2_MAX_* bounds); empty body."
    },
    401: {"description": "Missing, stale, wrong or already used signature; empty body."},
    413: {"description": "Body over MAX_BODY_BYTES (the usual error envelope)."},
    503: {"description": "FAROE_SECRET is not set or FAROE_APP names no app; empty body."},
}


_HEADERS = [
    {
        "name": TIMESTAMP_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "Unix time in seconds when the request was signed; refused when more "
        "than 300 s from the server's clock. Required unless FAROE_AUTH=none.",
    },
    {
        "name": SIGNATURE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
        "description": '`v1=` + lower-case hex HMAC-SHA256(FAROE_SECRET, timestamp + "." + '
        'raw body), or with X-Faroe-Nonce, of timestamp + "." + nonce + "." + raw body. '
        "Accepted once: the same signature again is 401. Required unless FAROE_AUTH=none.",
    },
    {
        "name": NONCE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
        "description": "Optional random value covered by the signature, so that two identical "
        "bodies signed in the same second are two requests (a signature is served once).",
    },
]


@router.post(
    "/actions",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra={"requestBody": _JSON_BODY, "parameters": _HEADERS},
    summary="Faroe user-server action invocation endpoint",
)
async def invoke_action(request: Request) -> Response:
    """Invoke one of the seven Faroe user-server actions on the user store of `FAROE_APP`
    (its default environment). Wire-compatible with `@faroe/user-server`; see docs/faroe.md.
    Unsigned requests are served only with `FAROE_AUTH=none`; a signed one is served once."""
    # The app's parts straight from its state, not as dependencies: on get_user, the busiest
    # call of a Faroe deployment, each dependency FastAPI solves costs about 2% of the call.
    state = request.app.state
    settings: Settings = state.settings
    hasher: PasswordHasher = state.hasher
    rules: Rules = state.rate_limits
    body = await request.body()
    signed = _verify(settings, request.headers, body)
    if isinstance(signed, Response):
        return signed
    try:
        action = protocol.parse_request(body)
    except protocol.InvalidRequest:
        return Response(status_code=400)
    store, guard = rules.limiter.store, None
    if signed is not None:
        if faroe.is_read(action) and isinstance(store, PostgresStore):
            # Checked in the read's own statement (services/faroe.read).
            guard = store.first_use_args(signed.key, signed.ttl, signed.now)
            await store.count_first_use(signed.now)
        elif not await store.first_use(signed.key, signed.ttl, signed.now):
            return Response(status_code=401)
    invocation_id = protocol.generate_action_invocation_id()
    try:
        # The REST door's bounds: a password Faroe stores here is one that door will verify.
        # The app's session factory, not a request session (deps.get_db): only a change opens
        # one, so a read costs no ORM session at all.
        user = await faroe.invoke(
            state.sessions,
            state.lookups,
            settings.faroe_app,
            action,
            invocation_id,
            await get_origin(request),
            hasher.bounds,
            mfa_disables=settings.faroe_mfa_users == "disabled",
            guard=guard,
        )
    except faroe.Replayed:
        return Response(status_code=401)
    except protocol.InvalidRequest as error:
        # Every such password is refused: the Faroe server's algorithm needs ARGON2_MAX_* raised.
        log.warning("faroe %s refused as an invalid request: %s", type(action).__name__, error)
        return Response(status_code=400)
    except protocol.ActionError as error:
        content = protocol.error_result(invocation_id, error.code)
    except faroe.FaroeAppMissing as error:
        _warn_once("no-app", "POST /v1/faroe/actions answers 503: %s", error)
        return Response(status_code=503)
    else:
        try:
            if user is None:
                content = protocol.empty_result(invocation_id)
            else:
                content = protocol.user_result(invocation_id, user)
        except ValueError as error:
            # A stored value Faroe could not parse (a negative counter, a lone surrogate).
            log.warning("faroe invocation %s: unserializable result: %s", invocation_id, error)
            content = protocol.error_result(invocation_id, faroe.INTERNAL_ERROR)
    # It may carry a password hash: SecurityHeaders marks every /v1/ answer no-store.
    return Response(content, media_type="application/json")
