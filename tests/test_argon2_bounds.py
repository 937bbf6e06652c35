"""Argon2 parameters are bounded (ARGON2_MAX_*, and 16-128 byte hashes, 8-128 byte salts) before
anything is stored or verified: an out-of-bounds hash from Faroe is an invalid request (400, empty
body, nothing stored), and one already in the database fails to verify like a wrong password,
in the time of a wrong password, never a 500 or a hashing slot held for hours."""

import base64
import logging
import os
import time

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from app.faroe.client import Signer, encode_request
from tests import admin_support
from tests.conftest import make_settings
from tests.faroe_support import SECRET, check_user, parse_strict
from tests.helpers import PASSWORD, signup, unique_email

URL = "/v1/faroe/actions"
SIGNER = Signer(SECRET)

# (algorithm id, hash length, salt length) a Faroe server could send; each out of bounds once.
OUT_OF_BOUNDS = {
    "memory far above (the reported one)": ("argon2id.1.4294967295.1.32", 32, 16),
    "memory above ARGON2_MAX_MEMORY_KIB": ("argon2id.1.262145.1.32", 32, 16),
    "memory under 8 KiB per lane": ("argon2id.2.64.16.32", 32, 16),
    "time above ARGON2_MAX_TIME_COST": ("argon2id.11.19456.1.32", 32, 16),
    "time zero": ("argon2id.0.19456.1.32", 32, 16),
    "parallelism above ARGON2_MAX_PARALLELISM": ("argon2id.2.19456.17.32", 32, 16),
    "parallelism zero": ("argon2id.2.19456.0.32", 32, 16),
    "hash under 16 bytes": ("argon2id.2.19456.1.15", 15, 16),
    "hash over 128 bytes": ("argon2id.2.19456.1.129", 129, 16),
    "hash length not the id's": ("argon2id.2.19456.1.32", 31, 16),
    "salt under 8 bytes": ("argon2id.2.19456.1.32", 32, 7),
    "salt over 128 bytes": ("argon2id.2.19456.1.32", 32, 129),
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def planted_phc(memory_kib: int, time_cost: int, parallelism: int = 1) -> str:
    """A PHC string with these parameters, as an import or an older version could have written
    it; the hash is random (computing a real one is what must not happen)."""
    return (
        f"$argon2id$v=19$m={memory_kib},t={time_cost},p={parallelism}"
        f"${_b64(os.urandom(16))}${_b64(os.urandom(32))}"
    )


async def faroe_post(client: httpx.AsyncClient, action: str, **arguments: object) -> httpx.Response:
    body = encode_request(action, arguments)
    return await client.post(URL, content=body, headers=SIGNER.headers(body))


@pytest.mark.parametrize("case", OUT_OF_BOUNDS)
async def test_faroe_create_user_out_of_bounds_is_400_and_stores_nothing(
    client: httpx.AsyncClient, pg: asyncpg.Connection, case: str
) -> None:
    algorithm_id, hash_length, salt_length = OUT_OF_BOUNDS[case]

    response = await faroe_post(
        client,
        "create_user",
        email_address="bounded@example.com",
        password_hash=os.urandom(hash_length),
        password_hash_algorithm_id=algorithm_id,
        password_salt=os.urandom(salt_length),
    )

    assert (response.status_code, response.content) == (400, b"")
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("case", OUT_OF_BOUNDS)
async def test_faroe_password_update_out_of_bounds_is_400_and_changes_nothing(
    client: httpx.AsyncClient, pg: asyncpg.Connection, case: str
) -> None:
    user_id = (await signup(client))["user"]["id"]
    before = await pg.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    algorithm_id, hash_length, salt_length = OUT_OF_BOUNDS[case]

    response = await faroe_post(
        client,
        "update_user_password_hash",
        user_id=user_id,
        password_hash=os.urandom(hash_length),
        password_hash_algorithm_id=algorithm_id,
        password_salt=os.urandom(salt_length),
        user_password_hash_counter=0,
    )

    assert (response.status_code, response.content) == (400, b"")
    assert await pg.fetchrow("SELECT * FROM users WHERE id = $1", user_id) == before


async def test_faroe_hash_at_the_bounds_is_accepted(client: httpx.AsyncClient) -> None:
    response = await faroe_post(
        client,
        "create_user",
        email_address="edge@example.com",
        password_hash=os.urandom(128),
        password_hash_algorithm_id="argon2id.10.262144.16.128",
        password_salt=os.urandom(128),
    )

    assert response.status_code == 200, response.content
    user = check_user(parse_strict(response.content)["values"])
    assert user.password_hash_algorithm_id == "argon2id.10.262144.16.128"


@pytest.mark.parametrize(
    ("memory_kib", "time_cost"),
    [(4_294_967_295, 1), (8192, 1000)],
    ids=["memory that cannot be allocated", "passes that would take seconds"],
)
async def test_stored_hash_out_of_bounds_is_invalid_credentials_at_once(
    client: httpx.AsyncClient, pg: asyncpg.Connection, memory_kib: int, time_cost: int
) -> None:
    email = unique_email("planted")
    tenant = await admin_support.default_app(pg)
    await admin_support.make_user(
        pg, tenant, email=email, password_hash=planted_phc(memory_kib, time_cost)
    )

    started = time.monotonic()
    response = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    elapsed = time.monotonic() - started

    assert response.status_code == 401, response.text
    assert response.json()["type"] == "invalid_credentials"
    assert elapsed < 2, elapsed


async def test_stored_hash_out_of_bounds_logs_why_without_the_user(
    client: httpx.AsyncClient, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    email = unique_email("planted")
    stored = planted_phc(4_294_967_295, 1)
    user_id = await admin_support.make_user(
        pg, await admin_support.default_app(pg), email=email, password_hash=stored
    )
    caplog.set_level(logging.WARNING)

    await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ARGON2_MAX_MEMORY_KIB" in message for message in warnings), warnings
    for message in warnings:
        assert email not in message and user_id not in message
        assert stored.rsplit("$", 2)[1] not in message  # nor the salt or hash


@pytest.mark.parametrize(
    "overrides",
    [
        {"argon2_memory_kib": 524288},
        {"argon2_time_cost": 11},
        {"argon2_parallelism": 17},
        {"argon2_parallelism": 4, "argon2_memory_kib": 16},
        {"argon2_max_memory_kib": 16384},  # below the configured 19456
    ],
    ids=["memory", "time", "parallelism", "memory per lane", "bound below the parameters"],
)
def test_parameters_outside_the_bounds_refuse_to_start(
    database_url: str, overrides: dict[str, int]
) -> None:
    with pytest.raises(ValidationError):
        make_settings(database_url, **overrides)
