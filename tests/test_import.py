"""POST /v1/admin/users/import (DESIGN "Admin power tools"): hashes of every supported format
sign in and are upgraded (or not) as the Faroe rule says, per-row outcomes, on_conflict, tenancy,
and the user.created events of the imported users."""

import asyncio
import base64
import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import asyncpg
import bcrypt
import httpx
import pytest
from argon2.low_level import Type, hash_secret
from passlib.hash import django_pbkdf2_sha256

from tests import admin_support
from tests.admin_support import World, auth, build_world
from tests.faroe_support import Argon2id, FaroeServerDouble
from tests.helpers import PASSWORD, unique_email

CONFIGURED_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"  # ARGON2_* defaults
URL = "/v1/admin/users/import"


@pytest.fixture
async def world(pg: asyncpg.Connection) -> World:
    return await build_world(pg)


async def post(
    client: httpx.AsyncClient, caller: dict[str, str], users: list[dict[str, Any]], **body: Any
) -> httpx.Response:
    return await client.post(URL, json={"users": users, **body}, headers=caller)


async def import_ok(
    client: httpx.AsyncClient, caller: dict[str, str], users: list[dict[str, Any]], **body: Any
) -> dict[str, Any]:
    response = await post(client, caller, users, **body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def signin(client: httpx.AsyncClient, email: str, password: str, app: str) -> int:
    response = await client.post(
        "/v1/auth/signin", json={"email": email, "password": password, "app_id": app}
    )
    return response.status_code


async def stored_hash(pg: asyncpg.Connection, email: str) -> str:
    value: str = await pg.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    return value


# ---- hash formats: made by the reference library, imported, signed in with -----------------


def bcrypt_hash(prefix: str = "$2b$") -> str:
    made = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    return prefix + made[4:]


def argon2_phc(kind: Type, time_cost: int, memory_kib: int) -> str:
    return hash_secret(
        PASSWORD.encode(),
        os.urandom(16),
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=1,
        hash_len=32,
        type=kind,
    ).decode()


def django_hash(iterations: int = 1000) -> str:
    """Django's own format, computed as django.contrib.auth.hashers.PBKDF2PasswordHasher does."""
    salt = "QwErTy1234567890abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt.encode(), iterations)
    made = f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"
    assert django_pbkdf2_sha256.verify(PASSWORD, made)  # libpass's reading of it agrees
    return made


UPGRADED = [
    pytest.param(lambda: {"password_hash": bcrypt_hash("$2a$")}, id="bcrypt 2a"),
    pytest.param(lambda: {"password_hash": bcrypt_hash("$2b$")}, id="bcrypt 2b"),
    pytest.param(lambda: {"password_hash": bcrypt_hash("$2y$")}, id="bcrypt 2y"),
    pytest.param(lambda: {"password_hash": django_hash()}, id="django pbkdf2"),
    pytest.param(lambda: {"password_hash": argon2_phc(Type.ID, 1, 8192)}, id="weak argon2id"),
    pytest.param(lambda: {"password_hash": argon2_phc(Type.I, 2, 19456)}, id="argon2i"),
    pytest.param(lambda: {"password_hash": argon2_phc(Type.D, 2, 19456)}, id="argon2d"),
]


@pytest.mark.parametrize("given", UPGRADED)
async def test_an_imported_hash_signs_in_and_is_upgraded_on_the_first_signin(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World, given: Any
) -> None:
    email = unique_email("imported")
    answer = await import_ok(client, world.callers["admin"], [{"email": email, **given()}])
    assert answer["created"] == 1, answer
    app = world.acme[0]

    assert await signin(client, email, "not-the-password-1", app) == 401
    assert await signin(client, email, PASSWORD, app) == 200

    assert (await stored_hash(pg, email)).startswith(CONFIGURED_PREFIX)
    assert await signin(client, email, PASSWORD, app) == 200


@pytest.mark.parametrize(("time_cost", "memory_kib"), [(2, 19456), (3, 65536)])
async def test_an_argon2id_hash_at_least_as_strong_is_kept(
    client: httpx.AsyncClient,
    pg: asyncpg.Connection,
    world: World,
    time_cost: int,
    memory_kib: int,
) -> None:
    email, phc = unique_email("strong"), argon2_phc(Type.ID, time_cost, memory_kib)
    await import_ok(client, world.callers["admin"], [{"email": email, "password_hash": phc}])

    assert await signin(client, email, PASSWORD, world.acme[0]) == 200
    assert await stored_hash(pg, email) == phc


async def test_a_faroe_hash_signs_in_through_both_doors_and_is_kept(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    """Faroe's own triple (the default app is Faroe's): stored as the Faroe door stores it, so
    a stock Faroe server reads back the very bytes and verifies them; REST keeps it."""
    stock = Argon2id(time=3, memory=65536, threads=1)
    salt = os.urandom(16)
    raw = stock.hash(PASSWORD, salt)
    email = unique_email("faroe")
    root = auth(await admin_support.make_admin(pg, await admin_support.default_app(pg)))
    row = {
        "email": email,
        "password_hash": base64.b64encode(raw).decode(),
        "password_salt": base64.b64encode(salt).decode(),
        "password_hash_algorithm_id": stock.id,
    }
    assert (await import_ok(client, root, [row]))["created"] == 1
    before = await stored_hash(pg, email)

    assert await signin(client, email, "not-the-password-1", "default") == 401
    assert await signin(client, email, PASSWORD, "default") == 200

    assert await stored_hash(pg, email) == before
    faroe = FaroeServerDouble(client, stock)
    user = await faroe.get_user_by_email_address(email)
    assert (user.password_hash_algorithm_id, user.password_hash, user.password_salt) == (
        stock.id,
        raw,
        salt,
    )
    assert faroe.verify_password(PASSWORD, user)


async def test_a_row_without_a_hash_makes_a_user_without_a_password(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    email = unique_email("nopassword")
    await import_ok(client, world.callers["admin"], [{"email": email}])
    row = await pg.fetchrow(
        "SELECT password_hash, password_changed_at FROM users WHERE email = $1", email
    )
    assert row is not None and tuple(row) == (None, None)
    assert await signin(client, email, PASSWORD, world.acme[0]) == 401


# ---- per-row outcomes ------------------------------------------------------------------------

X = "x@example.com"
BAD_ROWS = [
    pytest.param({"email": "not-an-address"}, "email: is not a valid e-mail address", id="email"),
    pytest.param(
        {"email": X, "password_hash": "md5$abc$def"},
        "password_hash: unrecognised format",
        id="unknown format",
    ),
    pytest.param(
        {"email": X, "password_hash": "$2b$12$tooshort"},
        "password_hash: malformed bcrypt hash",
        id="bad bcrypt",
    ),
    pytest.param(
        {"email": X, "password_hash": "x", "password_hash_algorithm_id": "sha1"},
        "password_hash_algorithm_id: unknown algorithm 'sha1'",
        id="unknown algorithm",
    ),
    pytest.param(
        {"email": X, "password_hash": "$2b$31$" + "a" * 53},
        "password_hash: bcrypt cost over 15",
        id="bcrypt cost",
    ),
    pytest.param(
        {"email": X, "password_hash": "$2b$03$" + "a" * 53},
        "password_hash: malformed bcrypt hash",
        id="bcrypt cost under 4",
    ),
    pytest.param(
        {"email": X, "password_hash": "FAKE:argon2 m=4294967295"},
        "password_hash: argon2 memory 4194304 KiB outside",
        id="argon2 memory",
    ),
    pytest.param(
        {"email": X, "password_hash": "FAKE:django 3000000"},
        "password_hash: pbkdf2 iterations over 2,000,000",
        id="pbkdf2 iterations",
    ),
    pytest.param(
        {
            "email": X,
            "password_hash": base64.b64encode(b"h" * 32).decode(),
            "password_salt": base64.b64encode(b"s" * 16).decode(),
            "password_hash_algorithm_id": "argon2id.100.65536.1.32",
        },
        "password_hash: argon2 time cost 100 outside 1..10",
        id="faroe time cost",
    ),
    pytest.param(
        {
            "email": X,
            "password_hash": "not base64!",
            "password_salt": "AAAA",
            "password_hash_algorithm_id": "argon2id.2.19456.1.32",
        },
        "password_hash: must be standard base64",
        id="faroe base64",
    ),
    pytest.param(
        {"email": X, "password_salt": "AAAA"},
        "password_salt: only with a Faroe password_hash_algorithm_id",
        id="salt alone",
    ),
    pytest.param({"email": X, "username": "a b"}, "username: must be", id="username"),
    pytest.param({"email": X, "username": "admin"}, "username: is reserved", id="rsv"),
    pytest.param({"email": X, "phone": "12345"}, "phone: must be in E.164", id="phone"),
    pytest.param(
        {"email": X, "metadata": {f"k{i}": "v" for i in range(51)}},
        "metadata: at most 50 keys",
        id="metadata keys",
    ),
    pytest.param(
        {"email": X, "metadata": {"k": "v" * 1025}},
        "metadata: values must be at most 1024 characters",
        id="metadata value",
    ),
    pytest.param(
        {"email": X, "created_at": "yesterday"},
        "created_at: must be an ISO 8601 date-time",
        id="created_at",
    ),
    pytest.param(
        {"email": X, "created_at": "2020-01-01T00:00:00"},
        "created_at: must have a time zone offset",
        id="created_at naive",
    ),
    pytest.param(
        {"email": X, "created_at": "2999-01-01T00:00:00Z"},
        "created_at: is in the future",
        id="created_at future",
    ),
    pytest.param(
        {"email": X, "created_at": "0001-01-01T00:00:00+01:00"},
        "created_at: is out of range",
        id="created_at before year 1 in UTC",
    ),
    pytest.param({"email": X, "name": "a\x00b"}, "name: must not contain NUL", id="nul"),
]


def _fake(row: dict[str, Any]) -> dict[str, Any]:
    """Hashes with out-of-bounds costs, made from a real one (computing them would take hours)."""
    value = row.get("password_hash", "")
    if value == "FAKE:argon2 m=4294967295":
        real = argon2_phc(Type.ID, 2, 19456)
        row = {**row, "password_hash": real.replace("m=19456", "m=4194304")}
    elif value == "FAKE:django 3000000":
        row = {**row, "password_hash": django_hash().replace("$1000$", "$3000000$")}
    return row


@pytest.mark.parametrize(("bad", "reason"), BAD_ROWS)
async def test_an_invalid_row_is_reported_by_index_and_the_others_are_imported(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World, bad: Any, reason: str
) -> None:
    good = [{"email": unique_email("good")}, {"email": unique_email("good")}]
    answer = await import_ok(client, world.callers["admin"], [good[0], _fake(bad), good[1]])

    assert (answer["created"], answer["errors"]) == (2, 1), answer
    statuses = [(r["index"], r["status"]) for r in answer["results"]]
    assert statuses == [(0, "created"), (1, "error"), (2, "created")]
    assert answer["results"][1]["error"].startswith(reason), answer["results"][1]
    assert "id" not in answer["results"][1]
    count = await pg.fetchval("SELECT count(*) FROM users WHERE email LIKE 'good%'")
    assert count == 2


async def test_an_error_never_echoes_the_hash(client: httpx.AsyncClient, world: World) -> None:
    secret = "$2b$12$" + "S" * 52 + "!"
    answer = await import_ok(
        client, world.callers["admin"], [{"email": X, "password_hash": secret}]
    )
    assert "SSSS" not in answer["results"][0]["error"]


async def test_more_than_1000_users_is_422(client: httpx.AsyncClient, world: World) -> None:
    users = [{"email": f"u{i}@example.com"} for i in range(1001)]
    response = await post(client, world.callers["admin"], users)
    assert response.status_code == 422
    assert response.json()["type"] == "validation_error"
    assert response.json()["details"][0]["field"] == "users"


async def test_1000_users_are_imported_in_one_call(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    hash_ = bcrypt_hash()
    users = [
        {"email": f"bulk{i}@example.com", "password_hash": hash_, "metadata": {"n": str(i)}}
        for i in range(1000)
    ]
    answer = await import_ok(client, world.callers["admin"], users)
    assert answer["created"] == 1000
    assert [r["index"] for r in answer["results"]] == list(range(1000))
    assert await pg.fetchval("SELECT count(*) FROM users WHERE email LIKE 'bulk%'") == 1000


@pytest.mark.parametrize(
    "body",
    [
        {"users": []},
        {"users": [{"email": 5}]},
        {"users": [{"email": "a@example.com", "role": "admin"}]},
        {"users": [{"email": "a@example.com"}], "on_conflict": "replace"},
        {"users": ["a@example.com"]},
    ],
    ids=["empty", "email not a string", "unknown field", "bad on_conflict", "row not an object"],
)
async def test_a_malformed_body_is_422(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World, body: dict[str, Any]
) -> None:
    response = await client.post(URL, json=body, headers=world.callers["admin"])
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "validation_error"


# ---- on_conflict ---------------------------------------------------------------------------


async def test_skip_leaves_the_existing_user_and_reports_its_id(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    existing = await admin_support.make_user(pg, world.acme, email="taken@example.com", name="Old")
    answer = await import_ok(
        client, world.callers["admin"], [{"email": "TAKEN@example.com", "name": "New"}]
    )
    assert answer["results"] == [{"index": 0, "status": "skipped", "id": existing}]
    assert await pg.fetchval("SELECT name FROM users WHERE id = $1", existing) == "Old"


async def test_error_reports_the_conflict_and_imports_the_others(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    await admin_support.make_user(pg, world.acme, email="taken@example.com")
    rows = [{"email": "taken@example.com"}, {"email": "fresh@example.com"}]
    answer = await import_ok(client, world.callers["admin"], rows, on_conflict="error")
    assert answer["results"][0] == {
        "index": 0,
        "status": "error",
        "error": "email: a user with this address already exists",
    }
    assert answer["results"][1]["status"] == "created"


async def test_update_changes_the_given_fields_and_the_hash(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    existing = await admin_support.make_user(
        pg, world.acme, email="taken@example.com", name="Old", phone="+14155550123"
    )
    row = {
        "email": "taken@example.com",
        "name": "New",
        "username": "NewName",
        "email_verified": True,
        "metadata": {"plan": "pro"},
        "password_hash": bcrypt_hash(),
    }
    answer = await import_ok(client, world.callers["admin"], [row], on_conflict="update")
    assert answer["results"] == [{"index": 0, "status": "updated", "id": existing}]
    stored = await pg.fetchrow("SELECT * FROM users WHERE id = $1", existing)
    assert stored is not None
    assert (stored["name"], stored["username"], stored["display_username"]) == (
        "New",
        "newname",
        "NewName",
    )
    assert stored["phone"] == "+14155550123"  # not in the row: unchanged
    assert stored["email_verified"] is True and stored["password_hash_counter"] == 1
    assert await signin(client, "taken@example.com", PASSWORD, world.acme[0]) == 200
    actions = await pg.fetch(
        "SELECT action FROM audit_events WHERE target_user_id = $1 ORDER BY id", existing
    )
    assert [r["action"] for r in actions] == ["user.updated", "user.signin"]


async def test_update_with_nothing_different_is_skipped(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    rows = [{"email": "same@example.com", "name": "Same", "password_hash": bcrypt_hash()}]
    await import_ok(client, world.callers["admin"], rows)
    answer = await import_ok(client, world.callers["admin"], rows, on_conflict="update")
    assert answer["results"][0]["status"] == "skipped"
    assert await pg.fetchval("SELECT count(*) FROM audit_events WHERE action = 'user.updated'") == 0


async def test_update_to_a_taken_username_is_a_row_error(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    await admin_support.make_user(pg, world.acme, email="a@example.com")
    rows = [{"email": "a@example.com", "username": "target"}, {"email": "b@example.com"}]
    answer = await import_ok(client, world.callers["admin"], rows, on_conflict="update")
    assert answer["results"][0] == {"index": 0, "status": "error", "error": "username: is taken"}
    assert answer["results"][1]["status"] == "created"


async def test_a_new_user_with_a_taken_username_is_a_row_error(
    client: httpx.AsyncClient, world: World
) -> None:
    answer = await import_ok(
        client, world.callers["admin"], [{"email": "n@example.com", "username": "Target"}]
    )
    assert answer["results"][0] == {"index": 0, "status": "error", "error": "username: is taken"}


async def test_the_same_email_twice_in_one_call_is_a_conflict_with_the_first(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    rows = [{"email": "twice@example.com"}, {"email": "Twice@example.com"}]
    answer = await import_ok(client, world.callers["admin"], rows)
    first = answer["results"][0]
    assert first["status"] == "created"
    assert answer["results"][1] == {"index": 1, "status": "skipped", "id": first["id"]}
    count = await pg.fetchval("SELECT count(*) FROM users WHERE lower(email) = 'twice@example.com'")
    assert count == 1


async def test_an_api_key_cannot_update_an_admin(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    email = await pg.fetchval("SELECT email FROM users WHERE id = $1", world.actor_ids["admin"])
    row = {"email": email, "password_hash": bcrypt_hash()}
    answer = await import_ok(client, world.callers["api_key"], [row], on_conflict="update")
    assert answer["results"][0]["status"] == "error"
    assert "API keys cannot change an admin's account" in answer["results"][0]["error"]


async def test_20_concurrent_imports_of_the_same_rows_create_each_user_once(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    rows = [{"email": f"race{i}@example.com"} for i in range(50)]
    answers = await asyncio.gather(*(post(client, world.callers["admin"], rows) for _ in range(20)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum(a.json()["created"] for a in answers) == 50
    assert sum(a.json()["skipped"] for a in answers) == 19 * 50
    assert await pg.fetchval("SELECT count(*) FROM users WHERE email LIKE 'race%'") == 50


# ---- fields, tenancy, events ----------------------------------------------------------------


async def test_email_verified_and_created_at_are_honoured(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    rows: list[dict[str, Any]] = [
        {"email": "old@example.com", "email_verified": True, "created_at": "2019-05-04T03:02:01Z"},
        {"email": "new@example.com"},
    ]
    await import_ok(client, world.callers["admin"], rows)
    old = await pg.fetchrow("SELECT * FROM users WHERE email = 'old@example.com'")
    new = await pg.fetchrow("SELECT * FROM users WHERE email = 'new@example.com'")
    assert old is not None and new is not None
    assert old["email_verified"] is True and new["email_verified"] is False
    assert old["created_at"] == datetime(2019, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert new["created_at"] == new["updated_at"]  # the import's "now"
    assert old["updated_at"] == new["updated_at"]


async def test_created_users_have_the_user_created_audit_row_of_the_caller(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    answer = await import_ok(
        client, world.callers["api_key"], [{"email": "e1@example.com", "name": "E"}]
    )
    user_id = answer["results"][0]["id"]
    rows = await admin_support.audit_rows(pg, target_user_id=user_id)
    assert [(r["action"], r["actor_type"], r["actor_id"]) for r in rows] == [
        ("user.created", "api_key", world.actor_ids["api_key"])
    ]


async def test_created_users_raise_webhook_events(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    """The acme world has an endpoint subscribed to user.created: one fan-out job a user."""
    rows = [{"email": f"hook{i}@example.com"} for i in range(3)]
    await import_ok(client, world.callers["admin"], rows)
    jobs = await pg.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'webhook.fanout' "
        "AND convert_from(payload, 'UTF8') LIKE '%user.created%'"
    )
    assert jobs == 3


async def test_the_users_go_into_the_callers_app(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    answer = await import_ok(client, world.callers["api_key"], [{"email": "mine@example.com"}])
    row = await pg.fetchrow(
        "SELECT app_id, env_id FROM users WHERE id = $1", answer["results"][0]["id"]
    )
    assert row is not None and tuple(row) == world.acme


async def test_an_api_key_of_another_app_cannot_import_into_this_one(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    response = await post(
        client, world.callers["api_key"], [{"email": "in@example.com"}], app_id="globex"
    )
    assert response.status_code == 404 and response.json()["error"] == "app not found"
    assert await pg.fetchval("SELECT count(*) FROM users WHERE email = 'in@example.com'") == 0


async def test_a_root_admin_may_name_another_app(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World
) -> None:
    answer = await import_ok(
        client, world.callers["root"], [{"email": "g@example.com"}], app_id="globex"
    )
    row = await pg.fetchval("SELECT app_id FROM users WHERE id = $1", answer["results"][0]["id"])
    assert row == world.globex[0]


@pytest.mark.parametrize(
    ("caller", "status"), [("user", 403), ("anonymous", 401), ("revoked_key", 401)]
)
async def test_only_admins_and_keys_may_import(
    client: httpx.AsyncClient, pg: asyncpg.Connection, world: World, caller: str, status: int
) -> None:
    response = await post(client, world.callers[caller], [{"email": "no@example.com"}])
    assert response.status_code == status
    assert await pg.fetchval("SELECT count(*) FROM users WHERE email = 'no@example.com'") == 0


async def test_a_body_over_64_kib_is_accepted_here(client: httpx.AsyncClient, world: World) -> None:
    rows = [{"email": f"big{i}@example.com", "name": "n" * 200} for i in range(400)]
    answer = await import_ok(client, world.callers["admin"], rows)
    assert answer["created"] == 400


async def test_get_on_the_import_path_is_405_not_a_user_id(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.get(URL, headers=world.callers["admin"])
    assert response.status_code == 405
