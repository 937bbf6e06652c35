"""How the API documents itself: each route's error responses, built from the ApiError
catalogue of app/errors.py, and the operation ids that generated SDKs name their methods after.

A route declares every error it can return, in its decorator:

    responses=errors(SESSION, JSON_BODY, ValidationFailed("name", "…"), DatabaseUnavailable)

An entry is an ApiError class (documented with the class's example), an instance (the message
this route sends, e.g. `NotFound("user not found")`), or a group of them (the tuples below).
tests/test_openapi.py holds each declaration to what its route can return.
"""

import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api import (
    admin_schemas,
    admin_tools_schemas,
    email_schemas,
    mfa_schemas,
    schemas,
    token_schemas,
    webhook_schemas,
)
from app.api.schemas import ErrorOut
from app.errors import (
    ApiError,
    AuthenticationRequired,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SessionExpired,
    UnsupportedMediaType,
    UserBanned,
)
from app.services.impersonation import ONLY_THE_USER

Responses = dict[int | str, dict[str, Any]]
Documented = type[ApiError] | ApiError | Iterable["Documented"]

# A JSON body that never reached validation: not JSON, over the size cap, or another media type.
# (Its 422s differ per route, so each route names its own ValidationFailed examples.)
JSON_BODY = (BadRequest, PayloadTooLarge, UnsupportedMediaType)
# A session bearer token (deps.get_principal): none, unknown, expired or revoked, banned user.
SESSION = (AuthenticationRequired, SessionExpired, UserBanned)
# A session of the user themselves (deps.OwnCaller): an impersonation session is refused.
OWN_SESSION = (*SESSION, Forbidden(ONLY_THE_USER))
# The app and environment a call names by slug or id (tenancy.resolve, admin_auth.resolve_*).
TENANT = (NotFound("app not found"), NotFound("environment not found"))

HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "the bearer challenge (RFC 6750)",
        "schema": {"type": "string"},
    },
}


def errors(*documented: Documented) -> Responses:
    """FastAPI `responses` for these errors: one entry per status, holding every declared error
    of that status as a named example of the ErrorOut envelope, and the headers they send."""
    by_status: dict[int, list[ApiError]] = {}
    for error in _instances(documented):
        listed = by_status.setdefault(error.status, [])
        # Groups overlap (two of them may both name UserBanned): list each body once.
        if all(error.body() != other.body() for other in listed):
            listed.append(error)
    return {status: _response(listed) for status, listed in sorted(by_status.items())}


def answer(example: dict[str, Any], status: int = 200) -> Responses:
    """The example of a route's success answer, where the response model is shared by routes
    that answer differently (StatusOut)."""
    if _holds_null(example):
        # FastAPI would drop the key from /openapi.json (see restore_null_examples), and only
        # the models' examples are put back.
        raise ValueError("a route's example cannot hold null; give its model an example")
    return {status: {"content": {"application/json": {"example": example}}}}


def _holds_null(value: object) -> bool:
    if isinstance(value, dict):
        return any(_holds_null(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_null(item) for item in value)
    return value is None


def restore_null_examples(spec: dict[str, Any]) -> None:
    """Put back the nulls FastAPI strips from every example when it writes the OpenAPI
    document (fastapi/fastapi#5559): without them, the example of a user with `"image": null`
    would lose the key and no longer match its own schema, where `image` is required."""
    models = {
        name: model
        for module in (
            schemas,
            admin_schemas,
            admin_tools_schemas,
            email_schemas,
            mfa_schemas,
            token_schemas,
            webhook_schemas,
        )
        for name, model in vars(module).items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        if "examples" in schema and name in models:
            schema["examples"] = models[name].model_json_schema()["examples"]


def _instances(documented: Iterable[Documented]) -> Iterator[ApiError]:
    for item in documented:
        if isinstance(item, ApiError):
            yield item
        elif isinstance(item, type):
            yield item.example()
        else:
            yield from _instances(item)


def _response(listed: list[ApiError]) -> dict[str, Any]:
    examples: dict[str, dict[str, Any]] = {}
    for error in listed:
        key = _key(error.message)
        while key in examples:  # the same message with other fields (a ban with an end)
            key += "_"
        examples[key] = {"summary": error.message, "value": error.body()}
    response: dict[str, Any] = {
        "model": ErrorOut,
        "description": _description(listed),
        "content": {"application/json": {"examples": examples}},
    }
    names = sorted({name for error in listed for name in error.headers})
    if names:
        response["headers"] = {
            # Required only when every error of the status sends it (InvalidCredentials has
            # no WWW-Authenticate, the other 401s do).
            name: {**HEADERS[name], "required": all(name in e.headers for e in listed)}
            for name in names
        }
    return response


def _key(message: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:64] or "error"


def _description(listed: list[ApiError]) -> str:
    lines = dict.fromkeys(f"- `{error.type}`: {error.description}" for error in listed)
    return "\n".join(lines)


# `<tag>.<name>`: a dotted, lower-case path of words.
OPERATION_ID = re.compile(r"[a-z]+(?:\.[a-z][a-z0-9_]*)+")


def operation_id(route: APIRoute) -> str:
    """`<tag>.<route name>`: `auth.signup`, `auth.me.get`, `admin.users.sessions.revoke`.

    Each route names itself in its decorator (`name="me.get"`: resource, then verb); a route
    without a name falls back on its function's (`operations.health`). The name is API surface
    — SDK methods are called after it — so it is written down rather than derived from the
    Python function, which may then be renamed freely."""
    tag = route.tags[0] if route.tags else "api"
    unique = f"{tag}.{route.name}"
    if not OPERATION_ID.fullmatch(unique):
        raise ValueError(f"operation id {unique!r} of {route.path} is not `<tag>.<words>`")
    return unique
