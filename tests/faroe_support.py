"""Test helpers for the Faroe endpoint: a checker that parses answers as strictly as the Faroe
server does (faroe-protocol.md §2.3), and a Faroe-server double that drives the endpoint the way
Faroe's Go user-server client does (§1.4, §2.4), hashing passwords with Faroe's argon2id.

The checker is written from the protocol document, independently of app/faroe/protocol.py, so
the tests do not check the serializer against itself.
"""

import base64
import binascii
import json
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import asyncpg
import httpx
from argon2.low_level import Type, hash_secret_raw
from fastapi import FastAPI

from app.faroe.client import FaroeClient, encode_request
from app.main import create_app
from tests.conftest import FAROE_SECRET, make_settings

SECRET = FAROE_SECRET
INT32_MAX = 2_147_483_647
INVOCATION_ID = re.compile(r'"action_invocation_id":"([a-z2-9]{24})"')
ID_ALPHABET = set("abcdefghjkmnopqrstuvwxyz23456789")
USER_FIELDS = {
    "id": str,
    "email_address": str,
    "password_hash": str,
    "password_hash_algorithm_id": str,
    "password_salt": str,
    "disabled": bool,
    "display_name": str,
    "email_address_counter": int,
    "password_hash_counter": int,
    "disabled_counter": int,
    "sessions_counter": int,
}
COUNTERS = (
    "email_address_counter",
    "password_hash_counter",
    "disabled_counter",
    "sessions_counter",
)
PADDED_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class FaroeRejects(AssertionError):
    """The Faroe server would fail to parse this answer."""


# ---- the strict checker (§2.3) ---------------------------------------------------------------


def _reject(what: str) -> NoReturn:
    raise FaroeRejects(what)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        _reject(f"duplicate member name in {names}")
    return dict(pairs)


def _integer(literal: str) -> int:
    if literal.startswith("-"):
        _reject(f"negative number {literal}")
    return int(literal)


def _walk_strings(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            _reject("lone surrogate in a string")
    elif isinstance(value, dict):
        for name, item in value.items():
            _walk_strings(name)
            _walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            _walk_strings(item)


def decode_padded_base64(text: str) -> bytes:
    """Go's base64.StdEncoding.DecodeString, and canonical: what we emit must be re-encodable."""
    if not PADDED_BASE64.fullmatch(text):
        _reject(f"not padded standard base64: {text!r}")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise FaroeRejects(str(error)) from None
    if base64.b64encode(data).decode("ascii") != text:
        _reject(f"non-canonical base64: {text!r}")
    return data


def parse_strict(raw: bytes) -> dict[str, Any]:
    """Parse a 200 answer as the Faroe server would (GOJSON v0.1.1 + sendActionInvocationRequest);
    raise FaroeRejects where it would fail."""
    if raw.startswith(b"\xef\xbb\xbf"):
        _reject("BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _reject("invalid UTF-8")
    if text != text.strip(" \t\r\n") or any(c in text for c in "\n\r\t"):
        _reject("whitespace (JSUS emits none)")
    try:
        result = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=lambda literal: _reject(f"non-integer number {literal}"),
            parse_constant=lambda name: _reject(f"constant {name}"),
        )
    except ValueError as error:  # includes raw control characters in strings
        raise FaroeRejects(f"not JSON: {error}") from None
    _walk_strings(result)
    if not isinstance(result, dict):
        _reject("not an object")
    if not isinstance(result.get("ok"), bool):
        _reject("ok is not a boolean")
    invocation_id = result.get("action_invocation_id")
    if not isinstance(invocation_id, str):
        _reject("action_invocation_id is not a string")
    if len(invocation_id) != 24 or not set(invocation_id) <= ID_ALPHABET:
        _reject(f"not a JSUS invocation id: {invocation_id!r}")
    if result["ok"]:
        if not isinstance(result.get("values"), dict):
            _reject("values is not an object")
        if list(result) != ["ok", "action_invocation_id", "values"]:
            _reject(f"envelope keys {list(result)}")
    else:
        if not isinstance(result.get("error_code"), str):
            _reject("error_code is not a string")
        if list(result) != ["ok", "action_invocation_id", "error_code"]:
            _reject(f"envelope keys {list(result)}")
    return result


@dataclass(frozen=True)
class User:
    """A user as Faroe's mapJSONObjectToUser reads it (bytes decoded)."""

    id: str
    email_address: str
    password_hash: bytes
    password_hash_algorithm_id: str
    password_salt: bytes
    disabled: bool
    display_name: str
    email_address_counter: int
    password_hash_counter: int
    disabled_counter: int
    sessions_counter: int


def check_user(values: dict[str, Any]) -> User:
    if list(values) != ["user"]:
        _reject(f"values keys {list(values)}")
    user = values["user"]
    if not isinstance(user, dict):
        _reject("user is not an object")
    if list(user) != list(USER_FIELDS):  # all eleven, in JSUS order
        _reject(f"user keys {list(user)}")
    for name, kind in USER_FIELDS.items():
        value = user[name]
        # bool is an int in Python but a different JSON type; and the reverse.
        if type(value) is not kind:
            _reject(f"{name} is {type(value).__name__}, not {kind.__name__}")
    for name in COUNTERS:
        if not 0 <= user[name] <= INT32_MAX:
            _reject(f"{name} {user[name]} is not a non-negative int32")
    return User(
        **{
            **user,
            "password_hash": decode_padded_base64(user["password_hash"]),
            "password_salt": decode_padded_base64(user["password_salt"]),
        }
    )


def normalize(raw: bytes) -> bytes:
    """The answer with its (random) invocation id replaced by the §6.1 example one."""
    text = raw.decode("utf-8")
    assert INVOCATION_ID.search(text), text
    return INVOCATION_ID.sub('"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo"', text).encode()


# ---- Faroe's argon2id, as in the Faroe examples (golang.org/x/crypto/argon2.IDKey) --------------


@dataclass(frozen=True)
class Argon2id:
    time: int = 2
    memory: int = 19456
    threads: int = 1
    length: int = 32
    salt_size: int = 16

    @property
    def id(self) -> str:
        return f"argon2id.{self.time}.{self.memory}.{self.threads}.{self.length}"

    def hash(self, password: str, salt: bytes) -> bytes:
        return hash_secret_raw(
            password.encode("utf-8"),
            salt,
            time_cost=self.time,
            memory_cost=self.memory,
            parallelism=self.threads,
            hash_len=self.length,
            type=Type.ID,
        )

    @classmethod
    def from_id(cls, algorithm_id: str) -> "Argon2id":
        name, time, memory, threads, length = algorithm_id.split(".")
        assert name == "argon2id", algorithm_id
        return cls(int(time), int(memory), int(threads), int(length))


# ---- the Faroe-server double ---------------------------------------------------------------


class UserNotFound(Exception):
    pass


class EmailAddressAlreadyUsed(Exception):
    pass


class FaroeFailure(Exception):
    """What Faroe turns into a generic error (internal_error to its client)."""


# Which typed error each action's Go client maps an error code to (§2.4); anything else is generic.
_TYPED: dict[str, dict[str, type[Exception]]] = {
    "create_user": {"email_address_already_used": EmailAddressAlreadyUsed},
    "get_user": {"user_not_found": UserNotFound},
    "get_user_by_email_address": {"user_not_found": UserNotFound},
    "update_user_email_address": {
        "user_not_found": UserNotFound,
        "email_address_already_used": EmailAddressAlreadyUsed,
    },
    "update_user_password_hash": {
        "user_not_found": UserNotFound,
        "email_address_already_used": EmailAddressAlreadyUsed,
    },
    "increment_user_sessions_counter": {
        "user_not_found": UserNotFound,
        "email_address_already_used": EmailAddressAlreadyUsed,
    },
    "delete_user": {"user_not_found": UserNotFound},
}


class FaroeServerDouble:
    """The Faroe server's UserServerClient (user-server.go) over the signed endpoint: builds the
    exact request bytes Faroe emits, parses every answer with parse_strict, maps error codes as
    Faroe does. `raw` keeps every answer, for byte-level assertions."""

    def __init__(self, client: httpx.AsyncClient, algorithm: Argon2id | None = None) -> None:
        self.endpoint = FaroeClient(client, SECRET)
        self.algorithm = algorithm or Argon2id()
        self.raw: list[bytes] = []

    async def _call(self, action: str, arguments: dict[str, Any]) -> dict[str, Any]:
        raw = await self.endpoint.send(encode_request(action, arguments))
        self.raw.append(raw)
        result = parse_strict(raw)
        if not result["ok"]:
            code = result["error_code"]
            raise _TYPED[action].get(code, FaroeFailure)(code)
        values: dict[str, Any] = result["values"]
        return values

    async def _user(self, action: str, arguments: dict[str, Any]) -> User:
        return check_user(await self._call(action, arguments))

    async def _void(self, action: str, arguments: dict[str, Any]) -> None:
        if await self._call(action, arguments) != {}:
            _reject("values of a void action is not {}")

    # the UserStoreInterface
    async def create_user(self, email: str, hash_: bytes, algorithm_id: str, salt: bytes) -> User:
        arguments = {
            "email_address": email,
            "password_hash": hash_,
            "password_hash_algorithm_id": algorithm_id,
            "password_salt": salt,
        }
        return await self._user("create_user", arguments)

    async def get_user(self, user_id: str) -> User:
        return await self._user("get_user", {"user_id": user_id})

    async def get_user_by_email_address(self, email: str) -> User:
        return await self._user("get_user_by_email_address", {"email_address": email})

    async def update_user_email_address(self, user_id: str, email: str, counter: int) -> None:
        arguments = {
            "user_id": user_id,
            "email_address": email,
            "user_email_address_counter": counter,
        }
        await self._void("update_user_email_address", arguments)

    async def update_user_password_hash(
        self, user_id: str, hash_: bytes, algorithm_id: str, salt: bytes, counter: int
    ) -> None:
        arguments = {
            "user_id": user_id,
            "password_hash": hash_,
            "password_hash_algorithm_id": algorithm_id,
            "password_salt": salt,
            "user_password_hash_counter": counter,
        }
        await self._void("update_user_password_hash", arguments)

    async def increment_user_sessions_counter(self, user_id: str, counter: int) -> None:
        arguments = {"user_id": user_id, "user_sessions_counter": counter}
        await self._void("increment_user_sessions_counter", arguments)

    async def delete_user(self, user_id: str) -> None:
        await self._void("delete_user", {"user_id": user_id})

    # the password side of Faroe (password.go): hash with the first algorithm, verify by id
    def hash_password(self, password: str, salt: bytes) -> tuple[bytes, str, bytes]:
        return self.algorithm.hash(password, salt), self.algorithm.id, salt

    def verify_password(self, password: str, user: User) -> bool:
        if user.password_hash_algorithm_id != self.algorithm.id:
            raise FaroeFailure("hash algorithm not supported")
        return self.algorithm.hash(password, user.password_salt) == user.password_hash


# ---- extra app instances with other settings ---------------------------------------------------


@asynccontextmanager
async def app_with(database_url: str, **settings: Any) -> Any:
    """A separate app (own engine) with settings overridden, and an HTTP client for it."""
    application: FastAPI = create_app(make_settings(database_url, **settings))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("198.51.100.4", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            yield c


async def faroe_audit(pg: asyncpg.Connection, user_id: str) -> list[str]:
    """The actions of the audit rows Faroe left for the user, oldest first."""
    rows = await pg.fetch(
        "SELECT action FROM audit_events WHERE target_user_id = $1 AND actor_type = 'faroe' "
        "ORDER BY id",
        user_id,
    )
    return [row["action"] for row in rows]
