"""Schemathesis hooks of the fuzz runs (loaded through SCHEMATHESIS_HOOKS=fuzz.hooks).

Authentication. FUZZ_ROLE (user, admin, api_key; unset = anonymous) picks the caller and
FUZZ_DATABASE_URL the database to mint it in. The credential is cached for the run and replaced
by a new caller as soon as the API answers 401 (the caller signed itself out, deleted itself,
was banned or had its sessions revoked by an earlier case): Schemathesis then mints again and
replays the request once, so a self-destructive case cannot turn later cases into false
failures.

Rules JSON Schema cannot carry. The OpenAPI describes every input rule it can (patterns,
lengths, formats, oneOf/not/if); `map_case` teaches the generator the few it cannot, which the
schema states in prose: an e-mail domain is not a special-use one, a new password is not one of
the most common ones, a phone number is a possible number of its country, a ban ends in the
future, a date-time fits in UTC, a cursor is one the server issued, and what must agree with
the stored user (display_username with its username, phone_verified with a phone,
current_password with its password). Only
components generated as *valid* are touched, and only to turn a value the documented rule
refuses into one it accepts: the negative cases stay as generated, and Schemathesis
re-validates a mapped case against the schema.
"""

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import schemathesis
from schemathesis.core.parameters import ParameterLocation

from app.errors import ValidationFailed
from app.ids import Prefix, is_valid
from app.security.passwords import common_passwords
from app.services import admin, cursors
from fuzz.credentials import PASSWORD, mint

ROLE = os.environ.get("FUZZ_ROLE", "")
DATABASE_URL = os.environ.get("FUZZ_DATABASE_URL", "")

NEW_PASSWORDS = ("password", "new_password")  # the fields checked by passwords.check_policy
INSTANTS = ("expires_at", "created_after", "created_before")
FUTURE = "2999-01-01T00:00:00Z"
Case = schemathesis.Case[Any]
SPECIAL_USE_DOMAINS = {"arpa", "invalid", "local", "localhost", "onion", "test"}


class Bearer:
    """`Authorization: Bearer <a freshly minted secret>` for the run's role."""

    def get(self, case: Case, ctx: schemathesis.AuthContext) -> str:
        return mint(DATABASE_URL, ROLE)

    def set(self, case: Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


if ROLE:
    if not DATABASE_URL:
        raise RuntimeError("FUZZ_ROLE needs FUZZ_DATABASE_URL")
    # Cached for the whole run (an hour is a session's lifetime); re-minted after every 401.
    schemathesis.auth(refresh_interval=3000, retry_on=[401])(Bearer)


def _positive(case: Case, location: ParameterLocation) -> bool:
    meta = case.meta
    if meta is None:  # an explicit example
        return True
    component = meta.components.get(location)
    return component is not None and component.mode.is_positive


def _possible_phone(value: str) -> str:
    try:
        if phonenumbers.is_possible_number(phonenumbers.parse(value, None)):
            return value
    except phonenumbers.NumberParseException:
        pass
    digits = int(hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest(), 16) % 1000
    return f"+14155550{digits:03d}"  # a possible number of the NANP


def _uncommon(value: str) -> str:
    return value + " not-common" if value.lower() in common_passwords() else value


def _instant(value: str, future: bool) -> str:
    """A date-time the server can hold in UTC (and, for a ban's end, one in the future)."""
    try:
        when = datetime.fromisoformat(value.replace("z", "Z")).astimezone(UTC)
    except (ValueError, OverflowError):
        return FUTURE
    if future and when <= datetime.now(UTC) + timedelta(minutes=5):
        return FUTURE
    return value


def _deliverable(address: str) -> str:
    """Not at a special-use domain (RFC 6761; email_validator refuses them)."""
    local, at, domain = address.rpartition("@")
    labels = domain.rstrip(".").split(".")
    if at and labels[-1].lower() in SPECIAL_USE_DOMAINS:
        return f"{local}@{'.'.join([*labels[:-1], 'com']) if len(labels) > 1 else 'example.com'}"
    return address


def _fix_body(body: dict[str, Any]) -> None:
    for name in ("email", "new_email"):
        if isinstance(body.get(name), str):
            body[name] = _deliverable(body[name])
    if isinstance(body.get("phone"), str):
        body["phone"] = _possible_phone(body["phone"])
    elif body.get("phone_verified") is True:
        body.pop("phone_verified")  # verifying needs a phone; the stored one is unknown here
    if isinstance(body.get("display_username"), str):
        # The username's own letters in other cases; with no username in the body it would
        # have to match the stored one, unknown here.
        if isinstance(body.get("username"), str):
            body["display_username"] = body["username"].swapcase()
        else:
            body.pop("display_username")
    for name in NEW_PASSWORDS:
        if isinstance(body.get(name), str):
            body[name] = _uncommon(body[name])
    if isinstance(body.get("expires_at"), str):
        body["expires_at"] = _instant(body["expires_at"], future=True)
    if isinstance(body.get("current_password"), str):
        body["current_password"] = PASSWORD  # the caller's, as minted


def _issued(query: dict[str, Any], path: str) -> bool:
    """Whether the query's cursor could have come from this list's `next_cursor`."""
    cursor = str(query["cursor"])
    try:
        if path.endswith("/audit-events"):
            last_id = cursors.decode(cursor).get("id")
            return isinstance(last_id, str) and is_valid(last_id, Prefix.AUDIT)
        order = admin.UserQuery(
            sort_by=str(query.get("sort_by", "created_at")),
            sort_order=str(query.get("sort_order", "desc")),
        )
        admin._cursor_position(order, cursor)  # the server's own check of a cursor
    except ValidationFailed:
        return False
    return True


def _fix_query(query: dict[str, Any], path: str) -> None:
    for name in INSTANTS:
        if isinstance(query.get(name), str):
            query[name] = _instant(query[name], future=False)
    if "cursor" in query:
        if not _issued(query, path):
            del query["cursor"]
        else:
            query.pop("offset", None)  # "give either offset or cursor, not both"


# A random, well-formed app or environment reference names none that exists, so nearly every
# generated sign-up and sign-in stopped at 404 before its own rules: public routes get the
# default tenant (its slugs and ids are exercised by tests/test_tenant_refs.py).
TENANT = {"app_id": "default", "env_id": "production"}
TENANT_HEADERS = {"x-app-id": "default", "x-env-id": "production"}


def _fix_tenant(case: Case) -> None:
    if not case.operation.path.startswith("/v1/auth/"):
        return
    if isinstance(case.body, dict) and _positive(case, ParameterLocation.BODY):
        case.body = {**case.body, **{k: v for k, v in TENANT.items() if k in case.body}}
    if case.headers and _positive(case, ParameterLocation.HEADER):
        for name in list(case.headers):
            if name.lower() in TENANT_HEADERS:
                case.headers[name] = TENANT_HEADERS[name.lower()]


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: Case) -> Case:
    _fix_tenant(case)
    if isinstance(case.body, dict) and _positive(case, ParameterLocation.BODY):
        body = dict(case.body)
        _fix_body(body)
        case.body = body
    if case.query and _positive(case, ParameterLocation.QUERY):
        query = dict(case.query)
        _fix_query(query, case.operation.path)
        case.query = query
    return case
