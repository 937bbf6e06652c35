"""The Faroe actions on the one user store: compare-and-swap, the password mapping, one user
through both doors, a whole Faroe life driven by a Faroe-server double, and what the store cannot
hold. Every Faroe answer here is parsed with the Faroe server's strict rules (faroe_support)."""

import asyncio
import base64
import json
import os
import secrets
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app import clock
from app.faroe.client import FaroeClient, encode_request
from app.services.faroe import (
    FaroePassword,
    password_from_faroe,
    password_to_faroe,
)
from tests import admin_support
from tests.faroe_support import (
    INT32_MAX,
    SECRET,
    Argon2id,
    EmailAddressAlreadyUsed,
    FaroeServerDouble,
    UserNotFound,
    faroe_audit,
    parse_strict,
)
from tests.helpers import DEFAULT_BOUNDS, PASSWORD, bearer, default_context, signup, unique_email

FAROE_ALGORITHM = Argon2id()  # argon2id.2.19456.1.32: Userkeep's own parameters
CONTEXT = default_context()


@pytest.fixture
def faroe(client: httpx.AsyncClient) -> FaroeServerDouble:
    return FaroeServerDouble(client)


async def invoke(client: httpx.AsyncClient, action: str, **arguments: Any) -> dict[str, Any]:
    return parse_strict(await FaroeClient(client, SECRET).invoke_raw(action, arguments))


async def error_code(client: httpx.AsyncClient, action: str, **arguments: Any) -> str | None:
    result = await invoke(client, action, **arguments)
    return None if result["ok"] else str(result["error_code"])


async def signin(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/signin", json={"email": email, "password": password})


async def faroe_signup(faroe: FaroeServerDouble, email: str, password: str) -> str:
    hash_, algorithm_id, salt = faroe.hash_password(password, os.urandom(16))
    return (await faroe.create_user(email, hash_, algorithm_id, salt)).id


async def admin_headers(pg: asyncpg.Connection) -> dict[str, str]:
    app_id, _ = await admin_support.default_app(pg)
    secret, _ = await admin_support.make_key(pg, app_id)
    return admin_support.auth(secret)


# ---- the password mapping (pure) ------------------------------------------------------------


@pytest.mark.parametrize("password", ["quiet-lantern-742", "é ünïcödé 🔑", "x" * 128])
def test_phc_round_trips_through_faroe_byte_identically(password: str) -> None:
    phc = CONTEXT.hash(password)
    faroe_form = password_to_faroe(phc, DEFAULT_BOUNDS)
    assert faroe_form.algorithm_id == "argon2id.2.19456.1.32"
    assert (len(faroe_form.salt), len(faroe_form.hash)) == (16, 32)
    assert (
        password_from_faroe(
            faroe_form.hash, faroe_form.algorithm_id, faroe_form.salt, DEFAULT_BOUNDS
        )
        == phc
    )
    # And the raw hash is what Faroe's argon2id computes from the password and salt.
    assert FAROE_ALGORITHM.hash(password, faroe_form.salt) == faroe_form.hash


@pytest.mark.parametrize(
    ("algorithm", "salt_size"),
    [(Argon2id(3, 64, 1, 32), 16), (Argon2id(1, 64, 4, 64), 32), (Argon2id(2, 32, 2, 16), 8)],
)
def test_faroe_argon2id_maps_to_a_phc_string_that_verifies(
    algorithm: Argon2id, salt_size: int
) -> None:
    salt = os.urandom(salt_size)
    hash_ = algorithm.hash("a fine password", salt)
    phc = password_from_faroe(hash_, algorithm.id, salt, DEFAULT_BOUNDS)
    assert phc.startswith(
        f"$argon2id$v=19$m={algorithm.memory},t={algorithm.time},p={algorithm.threads}$"
    )
    assert CONTEXT.verify("a fine password", phc)
    assert not CONTEXT.verify("another password", phc)
    assert password_to_faroe(phc, DEFAULT_BOUNDS) == FaroePassword(hash_, algorithm.id, salt)


@pytest.mark.parametrize(
    ("algorithm_id", "hash_", "salt"),
    [
        ("bcrypt.12", os.urandom(23), os.urandom(16)),
        ("", b"", b""),
        ("weird$id$with$dollars", b"\x00\xff", b"\x01"),
        ("argon2id.02.19456.1.32", os.urandom(32), os.urandom(16)),  # not canonical
        ("argon2id.2.19456.1.32 ", os.urandom(32), os.urandom(16)),
        ("argon2i.2.19456.1.32", os.urandom(32), os.urandom(16)),
    ],
)
# (An argon2id id out of the argon2 bounds is an invalid request: tests/test_argon2_bounds.py.)
def test_other_algorithms_are_kept_intact(algorithm_id: str, hash_: bytes, salt: bytes) -> None:
    stored = password_from_faroe(hash_, algorithm_id, salt, DEFAULT_BOUNDS)
    assert stored.startswith("$faroe$")
    assert CONTEXT.identify(stored) is None  # the REST door never tries to verify it
    assert password_to_faroe(stored, DEFAULT_BOUNDS) == FaroePassword(hash_, algorithm_id, salt)


def test_no_password_and_unmappable_rest_hashes() -> None:
    assert password_to_faroe(None, DEFAULT_BOUNDS) == FaroePassword(b"", "", b"")
    bcrypt_hash = CONTEXT.handler("bcrypt").using(rounds=4).hash("pw")
    assert password_to_faroe(bcrypt_hash, DEFAULT_BOUNDS) == FaroePassword(
        bcrypt_hash.encode(), "phc", b""
    )
    argon2i = CONTEXT.handler("argon2").using(type="I", memory_cost=64, rounds=1).hash("pw")
    assert password_to_faroe(argon2i, DEFAULT_BOUNDS).algorithm_id == "phc"
    for broken in ("$faroe$no-dollars", "$faroe$x$!!$AA==", "anything"):
        assert password_to_faroe(broken, DEFAULT_BOUNDS) == FaroePassword(
            broken.encode(), "phc", b""
        )


# ---- create and get -----------------------------------------------------------------------------


async def test_create_user_row(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    email = "Faroe.Person@Example.com"
    user_id = await faroe_signup(faroe, email, PASSWORD)
    row = await pg.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert row["email"] == email  # as given, casing kept
    assert row["email_verified"] is True  # Faroe verified it before creating the user
    assert row["name"] is None
    assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert row["password_changed_at"] is not None
    user = await faroe.get_user(user_id)
    assert (user.display_name, user.disabled) == ("", False)
    assert await faroe_audit(pg, user_id) == ["user.created"]
    event = await pg.fetchrow("SELECT * FROM audit_events WHERE target_user_id = $1", user_id)
    metadata = json.loads(event["metadata"])
    assert metadata["faroe_action"] == "create_user"
    assert len(metadata["action_invocation_id"]) == 24
    assert (event["ip"], event["actor_id"]) == ("203.0.113.7", None)


async def test_create_user_with_a_used_email(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    rest = (await signup(client))["user"]
    taken = await faroe_signup(faroe, "taken@example.com", PASSWORD)
    for email in ("taken@example.com", "TAKEN@example.com", rest["email"], rest["email"].upper()):
        # Exact duplicates, and (stricter than Faroe, by the case-insensitive unique index)
        # case variants.
        with pytest.raises(EmailAddressAlreadyUsed):
            await faroe_signup(faroe, email, PASSWORD)
    # A deleted user's e-mail is free again.
    await faroe.delete_user(taken)
    assert await faroe_signup(faroe, "taken@example.com", PASSWORD) != taken


async def test_get_user_by_email_is_exact(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    user_id = await faroe_signup(faroe, "Mixed.Case@Example.com", PASSWORD)
    assert (await faroe.get_user_by_email_address("Mixed.Case@Example.com")).id == user_id
    for other in ("mixed.case@example.com", "MIXED.CASE@EXAMPLE.COM", "Mixed.Case@Example.co"):
        with pytest.raises(UserNotFound):
            await faroe.get_user_by_email_address(other)
    # A user of another app is not Faroe's.
    acme = await admin_support.make_app(pg, "acme")
    await admin_support.make_user(pg, acme, email="acme@example.com")
    with pytest.raises(UserNotFound):
        await faroe.get_user_by_email_address("acme@example.com")
    # The lookup is an index search on lower(email) (uq_users_email_live, or the admin sort
    # index on the same key), not a scan: the same query as the service's, with the planner
    # told to avoid a scan of this tiny table.
    async with pg.transaction():
        await pg.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in await pg.fetch(
                "EXPLAIN SELECT id FROM users WHERE app_id = $1 AND env_id = $2 "
                "AND deleted_at IS NULL AND lower(email) = lower($3) AND email = $3",
                *acme,
                "x@example.com",
            )
        )
    index_condition = plan.split("Index Cond:")[1].split("\n")[0] if "Index Cond" in plan else ""
    assert "lower(email) =" in index_condition, plan


async def test_nfc_and_nfd_spellings_are_one_mailbox_on_both_doors(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    import unicodedata

    nfc = unicodedata.normalize("NFC", "josé@exämple.com")
    nfd = unicodedata.normalize("NFD", nfc)
    rest_user = (await signup(client, email=nfc))["user"]["id"]
    with pytest.raises(EmailAddressAlreadyUsed):
        await faroe_signup(faroe, nfd, PASSWORD)
    for spelling in (nfc, nfd):
        assert (await faroe.get_user_by_email_address(spelling)).id == rest_user
    # And the other way round: Faroe's NFD address blocks the REST sign-up of the NFC one.
    faroe_user = await faroe_signup(
        faroe, unicodedata.normalize("NFD", "zoë@example.com"), PASSWORD
    )
    response = await client.post(
        "/v1/auth/signup",
        json={"email": unicodedata.normalize("NFC", "zoë@example.com"), "password": PASSWORD},
    )
    assert response.status_code == 409 and response.json()["type"] == "email_taken"
    assert (await faroe.get_user(faroe_user)).email_address == unicodedata.normalize(
        "NFC", "zoë@example.com"
    )


async def test_ids_that_are_not_ours_are_user_not_found(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    acme = await admin_support.make_app(pg, "acme")
    other_app_user = await admin_support.make_user(pg, acme)
    ids = [
        "",
        "2mwe2e3ihz6ktm5puegeryhe",
        "ausr_",
        "ausr_01h455vb4pex5vsknk084sn02q",  # well-formed, unknown
        "ausr_zzzzzzzzzzzzzzzzzzzzzzzzzz",
        "aapp_01h455vb4pex5vsknk084sn02q",
        "ausr_01h455vb4pex5vsknk084sn02q\u0000",
        "\ud800",
        "x" * 10_000,
        other_app_user,
    ]
    for user_id in ids:
        assert await error_code(client, "get_user", user_id=user_id) == "user_not_found"
        assert await error_code(client, "delete_user", user_id=user_id) == "user_not_found"
        assert (
            await error_code(
                client, "increment_user_sessions_counter", user_id=user_id, user_sessions_counter=0
            )
            == "user_not_found"
        )
        assert (
            await error_code(
                client,
                "update_user_email_address",
                user_id=user_id,
                email_address="n@example.com",
                user_email_address_counter=0,
            )
            == "user_not_found"
        )
    assert await pg.fetchval("SELECT count(*) FROM audit_events") == 0


async def test_display_name_is_the_name_or_empty(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    data = await signup(client, name="Ada Lovelace")
    user_id = data["user"]["id"]
    assert (await faroe.get_user(user_id)).display_name == "Ada Lovelace"
    response = await client.patch(
        "/v1/auth/me", json={"name": None}, headers=bearer(data["session_token"])
    )
    assert response.status_code == 200
    assert (await faroe.get_user(user_id)).display_name == ""


async def test_user_without_password(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    response = await client.post(
        "/v1/admin/users", json={"email": "nopass@example.com"}, headers=await admin_headers(pg)
    )
    assert response.status_code == 201, response.text
    user = await faroe.get_user(response.json()["id"])
    assert (user.password_hash, user.password_hash_algorithm_id, user.password_salt) == (
        b"",
        "",
        b"",
    )
    # Faroe can then set one (a password reset), and the REST door accepts it.
    hash_, algorithm_id, salt = faroe.hash_password(PASSWORD, os.urandom(16))
    await faroe.update_user_password_hash(user.id, hash_, algorithm_id, salt, 0)
    assert (await signin(client, "nopass@example.com", PASSWORD)).status_code == 200


# ---- one password, two doors ------------------------------------------------------------------


async def test_password_set_through_faroe_signs_in_through_rest(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    email = unique_email("faroe")
    user_id = await faroe_signup(faroe, email, PASSWORD)
    before = await faroe.get_user(user_id)
    response = await signin(client, email, PASSWORD)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == user_id
    assert (await signin(client, email, PASSWORD + "x")).status_code == 401
    # Same parameters as the REST door's: no re-hash on sign-in, Faroe sees the same bytes.
    assert await faroe.get_user(user_id) == before


async def test_password_set_through_rest_is_served_to_faroe(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user = await faroe.get_user_by_email_address(data["user"]["email"])
    assert user.password_hash_algorithm_id == "argon2id.2.19456.1.32"
    assert (len(user.password_salt), len(user.password_hash)) == (16, 32)
    # Re-verified with the argon2 low-level API, as Faroe's argon2id does.
    parameters = Argon2id.from_id(user.password_hash_algorithm_id)
    assert parameters.hash(PASSWORD, user.password_salt) == user.password_hash
    assert faroe.verify_password(PASSWORD, user)
    assert not faroe.verify_password(PASSWORD + "!", user)


async def test_faroe_password_with_other_parameters_is_upgraded_by_rest(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    """A Faroe configured with weaker argon2id parameters than ARGON2_*: the REST door still
    verifies its hashes, and re-hashes with its own parameters on sign-in (no counter moves)."""
    faroe.algorithm = Argon2id(time=1, memory=1024, threads=2)
    email = unique_email("faroe")
    user_id = await faroe_signup(faroe, email, PASSWORD)
    assert (await faroe.get_user(user_id)).password_hash_algorithm_id == "argon2id.1.1024.2.32"
    assert (await signin(client, email, PASSWORD)).status_code == 200
    user = await faroe.get_user(user_id)
    assert user.password_hash_algorithm_id == "argon2id.2.19456.1.32"
    assert user.password_hash_counter == 0
    assert FAROE_ALGORITHM.hash(PASSWORD, user.password_salt) == user.password_hash


async def test_unknown_algorithm_is_stored_and_served_intact(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    hash_, salt = os.urandom(40), os.urandom(12)
    user = await faroe.create_user("scrypt@example.com", hash_, "scrypt.32768.8.1", salt)
    assert (user.password_hash, user.password_hash_algorithm_id, user.password_salt) == (
        hash_,
        "scrypt.32768.8.1",
        salt,
    )
    stored = await pg.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    assert stored.startswith("$faroe$scrypt.32768.8.1$")
    response = await signin(client, "scrypt@example.com", PASSWORD)
    assert response.status_code == 401
    assert response.json()["type"] == "invalid_credentials"
    # An update to another unknown algorithm is kept intact as well.
    new_hash, new_salt = os.urandom(32), b""
    await faroe.update_user_password_hash(user.id, new_hash, "pbkdf2$sha256", new_salt, 0)
    user = await faroe.get_user(user.id)
    assert (user.password_hash, user.password_hash_algorithm_id, user.password_salt) == (
        new_hash,
        "pbkdf2$sha256",
        new_salt,
    )


# ---- compare-and-swap ----------------------------------------------------------------------------


async def test_update_email(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user_id = data["user"]["id"]
    assert data["user"]["email_verified"] is False
    other = (await signup(client))["user"]["email"]

    with pytest.raises(UserNotFound):  # counter mismatch
        await faroe.update_user_email_address(user_id, "new@example.com", 1)
    for taken in (other, other.upper()):
        with pytest.raises(EmailAddressAlreadyUsed):
            await faroe.update_user_email_address(user_id, taken, 0)
    await faroe.update_user_email_address(user_id, "New@Example.com", 0)
    user = await faroe.get_user(user_id)
    assert (user.email_address, user.email_address_counter) == ("New@Example.com", 1)
    row = await pg.fetchrow("SELECT email_verified FROM users WHERE id = $1", user_id)
    assert row["email_verified"] is True
    # Its own address (any casing) is no conflict: success, and the counter moves.
    await faroe.update_user_email_address(user_id, "New@Example.com", 1)
    await faroe.update_user_email_address(user_id, "new@example.com", 2)
    assert (await faroe.get_user(user_id)).email_address_counter == 3
    # No row matched takes precedence over the conflict.
    with pytest.raises(UserNotFound):
        await faroe.update_user_email_address(user_id, other, 0)
    assert (await signin(client, "new@example.com", PASSWORD)).status_code == 200
    assert await faroe_audit(pg, user_id) == ["user.updated"] * 3


async def test_update_password_hash(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user_id, email = data["user"]["id"], data["user"]["email"]
    new_password = "a-new-faroe-passphrase"
    hash_, algorithm_id, salt = faroe.hash_password(new_password, os.urandom(16))
    with pytest.raises(UserNotFound):
        await faroe.update_user_password_hash(user_id, hash_, algorithm_id, salt, 5)
    before = await pg.fetchval("SELECT password_changed_at FROM users WHERE id = $1", user_id)
    await faroe.update_user_password_hash(user_id, hash_, algorithm_id, salt, 0)
    row = await pg.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert row["password_changed_at"] > before
    assert row["password_hash_counter"] == 1
    assert row["sessions_counter"] == 0
    # The REST sessions end (a password change revokes the other sessions).
    me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert me.status_code == 401
    assert (await signin(client, email, PASSWORD)).status_code == 401
    assert (await signin(client, email, new_password)).status_code == 200


async def test_concurrent_password_updates_exactly_one_wins(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    user_id = await faroe_signup(faroe, unique_email("race"), PASSWORD)
    bodies = [
        encode_request(
            "update_user_password_hash",
            {
                "user_id": user_id,
                "password_hash": os.urandom(32),
                "password_hash_algorithm_id": "argon2id.2.19456.1.32",
                "password_salt": os.urandom(16),
                "user_password_hash_counter": 0,
            },
        )
        for _ in range(10)
    ]
    endpoint = FaroeClient(client, SECRET)
    answers = await asyncio.gather(*(endpoint.send(body) for body in bodies))
    results = [parse_strict(answer) for answer in answers]
    assert sum(result["ok"] for result in results) == 1
    assert {r["error_code"] for r in results if not r["ok"]} == {"user_not_found"}
    user = await faroe.get_user(user_id)
    assert user.password_hash_counter == 1
    winner = json.loads(bodies[[r["ok"] for r in results].index(True)])
    assert user.password_hash == base64.b64decode(winner["arguments"]["password_hash"])
    assert await faroe_audit(pg, user_id) == ["user.created", "user.password_changed"]


async def test_increment_sessions_counter_revokes_rest_sessions(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user_id, email = data["user"]["id"], data["user"]["email"]
    second = (await signin(client, email, PASSWORD)).json()["session_token"]
    for token in (data["session_token"], second):
        assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200
    await faroe.increment_user_sessions_counter(user_id, 0)
    for token in (data["session_token"], second):
        response = await client.get("/v1/auth/me", headers=bearer(token))
        assert response.status_code == 401
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert refreshed.status_code == 401
    assert (await faroe.get_user(user_id)).sessions_counter == 1
    with pytest.raises(UserNotFound):  # a retried request
        await faroe.increment_user_sessions_counter(user_id, 0)
    # New sign-ins work as before.
    assert (await signin(client, email, PASSWORD)).status_code == 200
    event = await pg.fetchrow(
        "SELECT metadata FROM audit_events WHERE target_user_id = $1 AND actor_type = 'faroe'",
        user_id,
    )
    assert json.loads(event["metadata"])["sessions_revoked"] == 2
    # Admins find Faroe's changes by actor type.
    admin = await admin_support.make_admin(pg, await admin_support.default_app(pg))
    listed = await client.get(
        "/v1/admin/audit-events", params={"actor_type": "faroe"}, headers=bearer(admin)
    )
    assert listed.status_code == 200
    events = listed.json()["audit_events"]
    assert events and all(e["actor_type"] == "faroe" for e in events)
    assert user_id in {e["target_user_id"] for e in events}


async def test_sessions_counter_at_int32_max_is_internal_error(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user_id = data["user"]["id"]
    await pg.execute("UPDATE users SET sessions_counter = $2 WHERE id = $1", user_id, INT32_MAX)
    assert (await faroe.get_user(user_id)).sessions_counter == INT32_MAX
    code = await error_code(
        client, "increment_user_sessions_counter", user_id=user_id, user_sessions_counter=INT32_MAX
    )
    assert code == "internal_error"
    # Nothing was written: the counter, the session and the audit trail are as they were.
    assert (await faroe.get_user(user_id)).sessions_counter == INT32_MAX
    assert (
        await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    ).status_code == 200
    assert await faroe_audit(pg, user_id) == []
    # Deleting still works (the counter saturates).
    await faroe.delete_user(user_id)


async def test_delete_user_is_a_soft_delete(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user_id, email = data["user"]["id"], data["user"]["email"]
    await faroe.delete_user(user_id)
    row = await pg.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert row["deleted_at"] is not None
    assert (row["email_address_counter"], row["password_hash_counter"]) == (0, 0)
    assert row["sessions_counter"] == 1  # every session was revoked, as DELETE /v1/auth/me does
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", user_id
        )
        == 0
    )
    assert (
        await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    ).status_code == 401
    assert (await signin(client, email, PASSWORD)).status_code == 401
    for call in (
        faroe.get_user(user_id),
        faroe.get_user_by_email_address(email),
        faroe.update_user_email_address(user_id, "x@example.com", 0),
        faroe.update_user_password_hash(user_id, b"h" * 32, "x", b"", 0),
        faroe.increment_user_sessions_counter(user_id, 1),
        faroe.delete_user(user_id),
    ):
        with pytest.raises(UserNotFound):
            await call
    # The e-mail is free again for either door.
    assert (await signup(client, email=email))["user"]["id"] != user_id
    assert await faroe_audit(pg, user_id) == ["user.deleted"]


# ---- REST and admin changes as Faroe sees them -------------------------------------------------


async def test_rest_changes_are_visible_to_faroe(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    data = await signup(client)
    user_id, email = data["user"]["id"], data["user"]["email"]
    token = data["session_token"]
    response = await client.post(
        "/v1/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "rest-changed-passphrase"},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    user = await faroe.get_user(user_id)
    assert user.password_hash_counter == 1
    assert faroe.verify_password("rest-changed-passphrase", user)
    assert not faroe.verify_password(PASSWORD, user)
    assert (await client.delete("/v1/auth/me", headers=bearer(token))).status_code == 200
    with pytest.raises(UserNotFound):
        await faroe.get_user(user_id)
    with pytest.raises(UserNotFound):
        await faroe.get_user_by_email_address(email)


async def test_rest_password_change_ends_faroe_sessions(
    client: httpx.AsyncClient, faroe: FaroeServerDouble
) -> None:
    """The REST caller keeps the session it changed the password from; Faroe keeps none."""
    data = await signup(client)
    response = await client.post(
        "/v1/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "rest-changed-passphrase"},
        headers=bearer(data["session_token"]),
    )
    assert response.status_code == 200, response.text
    assert (await faroe.get_user(data["user"]["id"])).sessions_counter == 1
    me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert me.status_code == 200


async def test_bans_are_disabled(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    headers = await admin_headers(pg)
    data = await signup(client)
    user_id = data["user"]["id"]
    response = await client.post(f"/v1/admin/users/{user_id}/ban", json={}, headers=headers)
    assert response.status_code == 200, response.text
    user = await faroe.get_user(user_id)
    assert (user.disabled, user.disabled_counter) == (True, 1)
    assert user.sessions_counter == 1  # the ban revoked every session
    response = await client.post(f"/v1/admin/users/{user_id}/unban", headers=headers)
    assert response.status_code == 200
    user = await faroe.get_user(user_id)
    assert (user.disabled, user.disabled_counter) == (False, 2)

    # A ban that expires reads as not disabled once it has, and a Faroe write clears it.
    await client.post(f"/v1/admin/users/{user_id}/ban", json={"expires_in": 60}, headers=headers)
    assert (await faroe.get_user(user_id)).disabled is True
    clock.advance(timedelta(seconds=61))
    user = await faroe.get_user(user_id)
    assert (user.disabled, user.disabled_counter) == (False, 3)
    await faroe.update_user_email_address(user_id, unique_email("unbanned"), 0)
    row = await pg.fetchrow("SELECT banned, ban_expires FROM users WHERE id = $1", user_id)
    assert (row["banned"], row["ban_expires"]) == (False, None)


async def test_ban_written_in_sql_is_disabled(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    user_id = (await signup(client))["user"]["id"]
    await pg.execute("UPDATE users SET banned = true WHERE id = $1", user_id)
    assert (await faroe.get_user(user_id)).disabled is True
    # A Faroe write keeps a live ban.
    await faroe.increment_user_sessions_counter(user_id, 0)
    assert await pg.fetchval("SELECT banned FROM users WHERE id = $1", user_id) is True


async def test_admin_changes_bump_the_counters(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    headers = await admin_headers(pg)
    user_id = (await signup(client))["user"]["id"]
    new_email = unique_email("admin-set")
    response = await client.patch(
        f"/v1/admin/users/{user_id}", json={"email": new_email}, headers=headers
    )
    assert response.status_code == 200, response.text
    response = await client.delete(f"/v1/admin/users/{user_id}/sessions", headers=headers)
    assert response.status_code == 200, response.text
    user = await faroe.get_user_by_email_address(new_email)
    assert (user.email_address_counter, user.sessions_counter) == (1, 1)


# ---- what the store cannot hold ----------------------------------------------------------------


async def test_values_the_store_cannot_hold_are_internal_error(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    user_id = await faroe_signup(faroe, "holder@example.com", PASSWORD)
    huge = secrets.token_urlsafe(9000) + "@example.com"  # past the index's row size limit
    bad_emails = ["nul\u0000@example.com", "\ud800@example.com", huge]
    for email in bad_emails:
        code = await error_code(
            client,
            "create_user",
            email_address=email,
            password_hash=b"",
            password_hash_algorithm_id="x",
            password_salt=b"",
        )
        assert code == "internal_error", email[:20]
        code = await error_code(
            client,
            "update_user_email_address",
            user_id=user_id,
            email_address=email,
            user_email_address_counter=0,
        )
        assert code == "internal_error", email[:20]
        # No stored e-mail can be equal to it.
        code = await error_code(client, "get_user_by_email_address", email_address=email)
        assert code == "user_not_found"
    for algorithm_id in ("nul\u0000", "\udfff"):
        code = await error_code(
            client,
            "create_user",
            email_address="alg@example.com",
            password_hash=b"",
            password_hash_algorithm_id=algorithm_id,
            password_salt=b"",
        )
        assert code == "internal_error"
        code = await error_code(
            client,
            "update_user_password_hash",
            user_id=user_id,
            password_hash=b"",
            password_hash_algorithm_id=algorithm_id,
            password_salt=b"",
            user_password_hash_counter=0,
        )
        assert code == "internal_error"
    assert await pg.fetchval("SELECT count(*) FROM users") == 1
    user = await faroe.get_user(user_id)
    assert (user.email_address_counter, user.password_hash_counter) == (0, 0)
    assert await faroe_audit(pg, user_id) == ["user.created"]


async def test_stored_values_faroe_cannot_parse_are_internal_error(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    user_id = await faroe_signup(faroe, "negative@example.com", PASSWORD)
    await pg.execute("UPDATE users SET disabled_counter = -1 WHERE id = $1", user_id)
    assert await error_code(client, "get_user", user_id=user_id) == "internal_error"
    code = await error_code(
        client, "get_user_by_email_address", email_address="negative@example.com"
    )
    assert code == "internal_error"


# ---- a whole Faroe life -------------------------------------------------------------------------


async def test_a_whole_faroe_life(
    client: httpx.AsyncClient, pg: asyncpg.Connection, faroe: FaroeServerDouble
) -> None:
    email, password = "Life.Long@Example.com", "first-faroe-passphrase"

    # Sign-up (create_signup, then complete_signup): the address is free, the user is created.
    with pytest.raises(UserNotFound):
        await faroe.get_user_by_email_address(email)
    hash_, algorithm_id, salt = faroe.hash_password(password, os.urandom(16))
    user = await faroe.create_user(email, hash_, algorithm_id, salt)
    assert (user.email_address, user.disabled, user.display_name) == (email, False, "")
    assert (user.email_address_counter, user.password_hash_counter) == (0, 0)
    assert (user.disabled_counter, user.sessions_counter) == (0, 0)

    # Sign-in: found by the exact address, the password verifies, not disabled.
    user = await faroe.get_user_by_email_address(email)
    assert faroe.verify_password(password, user) and not user.disabled
    session = (user.disabled_counter, user.sessions_counter)  # what a Faroe session keeps

    # Session validation.
    assert (await faroe.get_user(user.id)).sessions_counter == session[1]

    # Password update (complete_user_password_update).
    password = "second-faroe-passphrase"
    hash_, algorithm_id, salt = faroe.hash_password(password, os.urandom(16))
    await faroe.update_user_password_hash(
        user.id, hash_, algorithm_id, salt, user.password_hash_counter
    )
    with pytest.raises(UserNotFound):  # the same request retried: the counter has moved
        await faroe.update_user_password_hash(
            user.id, hash_, algorithm_id, salt, user.password_hash_counter
        )
    user = await faroe.get_user(user.id)
    assert user.password_hash_counter == 1 and faroe.verify_password(password, user)

    # E-mail update (create_/complete_user_email_address_update).
    new_email = "life.moved@example.com"
    with pytest.raises(UserNotFound):
        await faroe.get_user_by_email_address(new_email)
    await faroe.update_user_email_address(user.id, new_email, user.email_address_counter)
    user = await faroe.get_user(user.id)
    assert (user.email_address, user.email_address_counter) == (new_email, 1)

    # The same user through the REST door, with the Faroe-set e-mail and password.
    rest = await signin(client, new_email, password)
    assert rest.status_code == 200, rest.text
    token = rest.json()["session_token"]

    # Delete all sessions: Faroe's counter moves, and the REST session ends too.
    await faroe.increment_user_sessions_counter(user.id, user.sessions_counter)
    user = await faroe.get_user(user.id)
    assert user.sessions_counter == session[1] + 1  # the Faroe session above is now invalid
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 401

    # Deletion (complete_user_deletion).
    await faroe.delete_user(user.id)
    with pytest.raises(UserNotFound):
        await faroe.get_user(user.id)
    with pytest.raises(UserNotFound):
        await faroe.get_user_by_email_address(new_email)

    # Every answer was parsed with the Faroe server's rules; none carried whitespace or floats.
    assert len(faroe.raw) == 15
    assert await faroe_audit(pg, user.id) == [
        "user.created",
        "user.password_changed",
        "user.updated",
        "session.revoked_all",
        "user.deleted",
    ]
