"""Which hashes a REST sign-in re-hashes (DESIGN "Faroe door details"): never an argon2id hash at
least as strong as ARGON2_* (more memory and at least as many passes; lanes do not count), so a
Faroe server keeps verifying what it wrote; weaker argon2id and bcrypt are upgraded to ARGON2_*.
The ARGON2_* settings are what new hashes get, so a REST password can be made one a stock Faroe
server verifies."""

import os

import asyncpg
import bcrypt
import httpx
import pytest
from argon2.low_level import Type, hash_secret, hash_secret_raw

from tests import admin_support
from tests.faroe_support import Argon2id, FaroeServerDouble, app_with
from tests.helpers import PASSWORD, unique_email

STOCK_FAROE = Argon2id(time=3, memory=65536, threads=1)  # argon2id.3.65536.1.32
CONFIGURED_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"  # ARGON2_* defaults


def argon2id_phc(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return hash_secret(
        PASSWORD.encode(),
        os.urandom(16),
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        type=Type.ID,
    ).decode("ascii")


async def plant(pg: asyncpg.Connection, password_hash: str) -> str:
    """A user whose stored hash is `password_hash` (imported, or written under older settings)."""
    email = unique_email("planted")
    tenant = await admin_support.default_app(pg)
    await admin_support.make_user(pg, tenant, email=email, password_hash=password_hash)
    return email


async def signin(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text


async def stored_hash(pg: asyncpg.Connection, email: str) -> str:
    value: str = await pg.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    return value


async def test_stock_faroe_hash_survives_a_rest_signin(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    faroe = FaroeServerDouble(client, STOCK_FAROE)
    email = unique_email("faroe")
    hash_, algorithm_id, salt = faroe.hash_password(PASSWORD, os.urandom(16))
    created = await faroe.create_user(email, hash_, algorithm_id, salt)
    before = await stored_hash(pg, email)

    await signin(client, email)

    assert await stored_hash(pg, email) == before
    after = await faroe.get_user(created.id)
    assert (after.password_hash_algorithm_id, after.password_hash, after.password_salt) == (
        "argon2id.3.65536.1.32",
        hash_,
        salt,
    )
    assert faroe.verify_password(PASSWORD, after)


@pytest.mark.parametrize(
    ("time_cost", "memory_kib", "parallelism"),
    [(2, 19456, 1), (4, 19456, 1), (2, 32768, 1), (2, 19456, 4), (3, 65536, 2)],
    ids=["equal", "more passes", "more memory", "more lanes", "stronger, more lanes"],
)
async def test_argon2id_at_least_as_strong_is_kept(
    client: httpx.AsyncClient,
    pg: asyncpg.Connection,
    time_cost: int,
    memory_kib: int,
    parallelism: int,
) -> None:
    planted = argon2id_phc(time_cost, memory_kib, parallelism)
    email = await plant(pg, planted)

    await signin(client, email)

    assert await stored_hash(pg, email) == planted


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(lambda: argon2id_phc(1, 8192, 1), id="argon2id t=1 m=8192"),
        pytest.param(lambda: argon2id_phc(3, 8192, 1), id="argon2id less memory"),
        pytest.param(lambda: argon2id_phc(1, 65536, 1), id="argon2id fewer passes"),
        pytest.param(
            lambda: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode(), id="bcrypt"
        ),
    ],
)
async def test_weaker_hash_is_upgraded_to_the_configured_parameters(
    client: httpx.AsyncClient, pg: asyncpg.Connection, planted: object
) -> None:
    assert callable(planted)
    email = await plant(pg, planted())

    await signin(client, email)

    upgraded = await stored_hash(pg, email)
    assert upgraded.startswith(CONFIGURED_PREFIX), upgraded
    await signin(client, email)  # the same password, under the new hash


async def test_stock_faroe_settings_make_rest_passwords_faroe_verifiable(
    database_url: str,
) -> None:
    stock = {"argon2_time_cost": 3, "argon2_memory_kib": 65536, "argon2_parallelism": 1}
    async with app_with(database_url, **stock) as c:
        email = unique_email("rest")
        response = await c.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text

        user = await FaroeServerDouble(c, STOCK_FAROE).get_user_by_email_address(email)

    assert user.password_hash_algorithm_id == "argon2id.3.65536.1.32"
    # What a stock Faroe server computes to verify it (golang.org/x/crypto/argon2.IDKey).
    recomputed = hash_secret_raw(
        PASSWORD.encode(),
        user.password_salt,
        time_cost=3,
        memory_cost=65536,
        parallelism=1,
        hash_len=32,
        type=Type.ID,
    )
    assert recomputed == user.password_hash


# ---- bcrypt: what an imported hash meets ------------------------------------------------------

LONG = "correct horse battery staple " * 4  # 116 bytes: past bcrypt's 72


async def test_a_long_password_verifies_against_bcrypt_as_bcrypt_read_it(client, pg):
    """bcrypt made the hash from the first 72 bytes; bcrypt >= 5 raises on longer input, which
    was a 500. The right password signs in and is re-hashed whole."""
    legacy = bcrypt.hashpw(LONG.encode()[:72], bcrypt.gensalt(4)).decode()
    email = await plant(pg, legacy)
    response = await client.post("/v1/auth/signin", json={"email": email, "password": LONG})
    assert response.status_code == 200, response.text
    upgraded = await pg.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    assert upgraded.startswith(CONFIGURED_PREFIX)
    again = await client.post("/v1/auth/signin", json={"email": email, "password": LONG})
    assert again.status_code == 200


async def test_a_wrong_long_password_against_bcrypt_is_401(client, pg):
    email = await plant(pg, bcrypt.hashpw(b"short-secret-1", bcrypt.gensalt(4)).decode())
    response = await client.post("/v1/auth/signin", json={"email": email, "password": LONG})
    assert response.status_code == 401 and response.json()["type"] == "invalid_credentials"


async def test_a_bcrypt_cost_beyond_the_bound_is_never_verified(client, pg, caplog):
    """$2b$31$ would hold a hashing slot for hours: refused like a wrong password, at once."""
    real = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    email = await plant(pg, real.replace("$2b$04$", "$2b$31$", 1))
    response = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert response.status_code == 401 and response.json()["type"] == "invalid_credentials"
    assert any("bcrypt cost over" in r.getMessage() for r in caplog.records)
