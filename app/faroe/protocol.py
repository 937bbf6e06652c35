"""Wire format of the Faroe user-server action invocation endpoint.

Parsing, validation and serialization only: no HTTP, no database. The goal is to accept and
reject exactly what the official JS helper (JSUS, ``@faroe/user-server`` with
``@oslojs/encoding`` 1.1.0) accepts and rejects, and to emit the same bytes it emits, so that
this service is a drop-in replacement for it. See ``/work/shared/faroe-protocol.md`` (§1-§3,
§6.1, §9) for the sources each rule is taken from.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeAlias

__all__ = [
    "ACTION_NAMES",
    "Action",
    "ActionError",
    "CreateUser",
    "DeleteUser",
    "FaroeUser",
    "GetUser",
    "GetUserByEmailAddress",
    "IncrementUserSessionsCounter",
    "InvalidRequest",
    "UpdateUserEmailAddress",
    "UpdateUserPasswordHash",
    "empty_result",
    "error_result",
    "generate_action_invocation_id",
    "parse_request",
    "user_result",
]

ACTION_NAMES: tuple[str, ...] = (
    "create_user",
    "get_user",
    "get_user_by_email_address",
    "update_user_email_address",
    "update_user_password_hash",
    "increment_user_sessions_counter",
    "delete_user",
)

INT32_MIN = -2_147_483_648
INT32_MAX = 2_147_483_647


class InvalidRequest(Exception):
    """The request is one JSUS would throw on; the caller answers HTTP 400 with an empty body."""


class ActionError(Exception):
    """An action error, answered as ``{"ok":false,...,"error_code":code}`` with HTTP 200."""

    code: str

    def __init__(self, code: str) -> None:
        super().__init__(f"user action error {code}")
        self.code = code


# Hashes and salts are kept out of repr() so that they never end up in logs or tracebacks.


@dataclass(frozen=True, slots=True)
class CreateUser:
    email_address: str
    password_hash: bytes = field(repr=False)
    password_hash_algorithm_id: str
    password_salt: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class GetUser:
    user_id: str


@dataclass(frozen=True, slots=True)
class GetUserByEmailAddress:
    email_address: str


@dataclass(frozen=True, slots=True)
class UpdateUserEmailAddress:
    user_id: str
    email_address: str
    user_email_address_counter: int


@dataclass(frozen=True, slots=True)
class UpdateUserPasswordHash:
    user_id: str
    password_hash: bytes = field(repr=False)
    password_hash_algorithm_id: str
    password_salt: bytes = field(repr=False)
    user_password_hash_counter: int


@dataclass(frozen=True, slots=True)
class IncrementUserSessionsCounter:
    user_id: str
    user_sessions_counter: int


@dataclass(frozen=True, slots=True)
class DeleteUser:
    user_id: str


Action: TypeAlias = (
    CreateUser
    | GetUser
    | GetUserByEmailAddress
    | UpdateUserEmailAddress
    | UpdateUserPasswordHash
    | IncrementUserSessionsCounter
    | DeleteUser
)


@dataclass(frozen=True, slots=True)
class FaroeUser:
    id: str
    email_address: str
    password_hash: bytes = field(repr=False)
    password_hash_algorithm_id: str
    password_salt: bytes = field(repr=False)
    disabled: bool
    display_name: str
    email_address_counter: int
    password_hash_counter: int
    disabled_counter: int
    sessions_counter: int


# --- request parsing -------------------------------------------------------------------------

_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_VALUES = {char: value for value, char in enumerate(_BASE64_ALPHABET)}


def _decode_base64(encoded: str) -> bytes:
    """Decode exactly like OSLO 1.1.0 ``decodeBase64`` (padding required).

    ``base64.b64decode(validate=True)`` is not used because it accepts non-zero unused bits
    (``"AB=="``) and rejects padding inside the string (``"AA==AAAA"``), the opposite of OSLO.
    OSLO 1.1.0 decodes each 4-character group on its own, which is why a padded group may be
    followed by more groups. Newer OSLO source rejects that, but JSUS's lockfile pins 1.1.0.
    """
    if len(encoded) % 4 != 0:
        # OSLO reads past the end of a short final group and finds no valid character there.
        raise ValueError("base64 length is not a multiple of 4")
    decoded = bytearray()
    for start in range(0, len(encoded), 4):
        group = encoded[start : start + 4]
        data = group.rstrip("=")
        if "=" in data:
            raise ValueError("base64 padding before data")
        chunk = 0
        for position, char in enumerate(data):
            value = _BASE64_VALUES.get(char)
            if value is None:
                raise ValueError("invalid base64 character")
            chunk |= value << ((3 - position) * 6)
        if len(data) == 4:
            decoded += chunk.to_bytes(3, "big")
        elif len(data) == 3:
            if chunk & 0xFF:
                raise ValueError("non-zero unused base64 bits")
            decoded += (chunk >> 8).to_bytes(2, "big")
        elif len(data) == 2:
            if chunk & 0xFFFF:
                raise ValueError("non-zero unused base64 bits")
            decoded.append(chunk >> 16)
        else:
            raise ValueError("base64 group with too few data characters")
    return bytes(decoded)


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN/Infinity/-Infinity; JSON.parse does not.
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_int(literal: str) -> int | float:
    # int() refuses literals longer than sys.get_int_max_str_digits(); JSON.parse turns any
    # literal into a double instead, so an over-long number in an ignored member must not make
    # the whole request fail. float() yields inf, which any counter check then rejects.
    try:
        return int(literal)
    except ValueError:
        return float(literal)


def _string(arguments: dict[str, object], name: str) -> str:
    # A missing member and JSON null both come back as None, and JSUS rejects both.
    value = arguments.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"invalid or missing '{name}' argument")
    return value


def _bytes(arguments: dict[str, object], name: str) -> bytes:
    encoded = _string(arguments, name)
    try:
        return _decode_base64(encoded)
    except ValueError as error:
        raise InvalidRequest(f"invalid '{name}' argument: {error}") from error


def _int32(arguments: dict[str, object], name: str) -> int:
    value = arguments.get(name)
    # bool is an int subclass in Python but never a number in JS.
    if isinstance(value, bool):
        raise InvalidRequest(f"invalid or missing '{name}' argument")
    if isinstance(value, float):
        # JS has one number type: 1.0 and 1e0 are the integer 1 (and -0.0 becomes 0 here).
        # is_integer() is False for inf and nan.
        if not value.is_integer():
            raise InvalidRequest(f"invalid '{name}' argument: not an integer")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidRequest(f"invalid or missing '{name}' argument")
    if not INT32_MIN <= value <= INT32_MAX:
        raise InvalidRequest(f"invalid '{name}' argument: out of int32 range")
    return value


def _create_user(arguments: dict[str, object]) -> CreateUser:
    return CreateUser(
        email_address=_string(arguments, "email_address"),
        password_hash=_bytes(arguments, "password_hash"),
        password_hash_algorithm_id=_string(arguments, "password_hash_algorithm_id"),
        password_salt=_bytes(arguments, "password_salt"),
    )


def _get_user(arguments: dict[str, object]) -> GetUser:
    return GetUser(user_id=_string(arguments, "user_id"))


def _get_user_by_email_address(arguments: dict[str, object]) -> GetUserByEmailAddress:
    return GetUserByEmailAddress(email_address=_string(arguments, "email_address"))


def _update_user_email_address(arguments: dict[str, object]) -> UpdateUserEmailAddress:
    return UpdateUserEmailAddress(
        user_id=_string(arguments, "user_id"),
        email_address=_string(arguments, "email_address"),
        user_email_address_counter=_int32(arguments, "user_email_address_counter"),
    )


def _update_user_password_hash(arguments: dict[str, object]) -> UpdateUserPasswordHash:
    return UpdateUserPasswordHash(
        user_id=_string(arguments, "user_id"),
        password_hash=_bytes(arguments, "password_hash"),
        password_hash_algorithm_id=_string(arguments, "password_hash_algorithm_id"),
        password_salt=_bytes(arguments, "password_salt"),
        user_password_hash_counter=_int32(arguments, "user_password_hash_counter"),
    )


def _increment_user_sessions_counter(
    arguments: dict[str, object],
) -> IncrementUserSessionsCounter:
    return IncrementUserSessionsCounter(
        user_id=_string(arguments, "user_id"),
        user_sessions_counter=_int32(arguments, "user_sessions_counter"),
    )


def _delete_user(arguments: dict[str, object]) -> DeleteUser:
    return DeleteUser(user_id=_string(arguments, "user_id"))


# Keyword arguments above are evaluated left to right, so fields are checked in JSUS order.
_ARGUMENT_PARSERS: dict[str, Callable[[dict[str, object]], Action]] = {
    "create_user": _create_user,
    "get_user": _get_user,
    "get_user_by_email_address": _get_user_by_email_address,
    "update_user_email_address": _update_user_email_address,
    "update_user_password_hash": _update_user_password_hash,
    "increment_user_sessions_counter": _increment_user_sessions_counter,
    "delete_user": _delete_user,
}
assert tuple(_ARGUMENT_PARSERS) == ACTION_NAMES


def parse_request(body: bytes) -> Action:
    """Parse a request body into the invoked action, or raise InvalidRequest."""
    # Mimics the fetch API's Request.text() that feeds JSUS: invalid UTF-8 becomes U+FFFD and
    # one leading BOM is dropped (json.loads would otherwise refuse it).
    text = body.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        parsed: object = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except (ValueError, RecursionError) as error:
        # RecursionError: the C scanner recurses per nesting level, so a body of thousands of
        # "[" must be a 400, not a 500. This is the one known divergence from JSUS, whose
        # JSON.parse is iterative and would accept a deeply nested but well-formed extra
        # member; the Faroe server never nests deeper than two levels.
        raise InvalidRequest("body is not valid JSON") from error
    if not isinstance(parsed, dict):
        raise InvalidRequest("body is not a JSON object")
    action = parsed.get("action")
    if not isinstance(action, str):
        raise InvalidRequest("missing or invalid 'action' field")
    arguments = parsed.get("arguments")
    # JSUS lets an array through its typeof check but then finds none of the named members in
    # it, so rejecting every non-object here is equivalent.
    if not isinstance(arguments, dict):
        raise InvalidRequest("missing or invalid 'arguments' field")
    parse_arguments = _ARGUMENT_PARSERS.get(action)
    if parse_arguments is None:
        raise InvalidRequest("unknown action")
    return parse_arguments(arguments)


# --- invocation id -------------------------------------------------------------------------

_INVOCATION_ID_ALPHABET = "abcdefghjkmnopqrstuvwxyz23456789"


# Byte b to the alphabet's character b >> 3, as a table for bytes.translate: one C call where
# a join over a generator cost more than the rest of building a get_user answer.
_INVOCATION_ID_TABLE = bytes(ord(_INVOCATION_ID_ALPHABET[b >> 3]) for b in range(256))


def generate_action_invocation_id() -> str:
    """Return a fresh 24-character id, generated exactly as JSUS does (120 random bits)."""
    return secrets.token_bytes(24).translate(_INVOCATION_ID_TABLE).decode("ascii")


# --- result serialization ------------------------------------------------------------------


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_counter(name: str, value: object) -> int:
    # The Faroe server parses counters with ParseUint(value, 10, 32): a float (1.0), a
    # negative number or anything above int32 would make it fail the whole action, so refuse
    # here where the caller can still answer internal_error deliberately.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= INT32_MAX:
        raise ValueError(f"{name} must be within 0..{INT32_MAX}, got {value}")
    return value


def _check_bytes(name: str, value: object) -> str:
    if not isinstance(value, bytes | bytearray):
        raise ValueError(f"{name} must be bytes, got {type(value).__name__}")
    return base64.b64encode(value).decode("ascii")


def _serialize(result: dict[str, object]) -> bytes:
    text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        # A lone surrogate (only reachable from a "\udXXX" escape in an earlier request) has
        # no UTF-8 form. JSUS would emit it as a "\udXXX" escape, but the Faroe server rejects
        # lone surrogates in JSON strings anyway, so the action fails there either way; a
        # ValueError lets the caller answer internal_error itself instead of emitting bytes
        # that are not byte-compatible and that Faroe cannot parse.
        raise ValueError("result contains a lone surrogate and cannot be encoded") from error


def user_result(invocation_id: str, user: FaroeUser) -> bytes:
    """Success result of create_user, get_user and get_user_by_email_address."""
    if not isinstance(user.disabled, bool):
        raise ValueError(f"disabled must be a bool, got {type(user.disabled).__name__}")
    # Key order is JSUS's object literal order, which is what makes the bytes identical.
    user_object: dict[str, object] = {
        "id": _check_str("id", user.id),
        "email_address": _check_str("email_address", user.email_address),
        "password_hash": _check_bytes("password_hash", user.password_hash),
        "password_hash_algorithm_id": _check_str(
            "password_hash_algorithm_id", user.password_hash_algorithm_id
        ),
        "password_salt": _check_bytes("password_salt", user.password_salt),
        "disabled": user.disabled,
        # Faroe rejects null here; "no display name" must be sent as "".
        "display_name": _check_str("display_name", user.display_name),
        "email_address_counter": _check_counter(
            "email_address_counter", user.email_address_counter
        ),
        "password_hash_counter": _check_counter(
            "password_hash_counter", user.password_hash_counter
        ),
        "disabled_counter": _check_counter("disabled_counter", user.disabled_counter),
        "sessions_counter": _check_counter("sessions_counter", user.sessions_counter),
    }
    return _serialize(
        {
            "ok": True,
            "action_invocation_id": _check_str("invocation_id", invocation_id),
            "values": {"user": user_object},
        }
    )


def empty_result(invocation_id: str) -> bytes:
    """Success result of the four actions that return nothing (``"values":{}``)."""
    return _serialize(
        {
            "ok": True,
            "action_invocation_id": _check_str("invocation_id", invocation_id),
            "values": {},
        }
    )


def error_result(invocation_id: str, code: str) -> bytes:
    """Action error result; any code is passed through, as JSUS does."""
    return _serialize(
        {
            "ok": False,
            "action_invocation_id": _check_str("invocation_id", invocation_id),
            "error_code": _check_str("code", code),
        }
    )
