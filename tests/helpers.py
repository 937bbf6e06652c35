"""Small helpers shared by the tests: sign a user up, build auth headers."""

import itertools
from typing import Any

import httpx
from passlib.context import CryptContext

from app.security.argon2_params import Argon2Bounds, Argon2Parameters
from app.security.passwords import make_context
from app.settings import Settings

PASSWORD = "quiet-lantern-742"
_counter = itertools.count()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}@example.com"


async def signup(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"email": unique_email(), "password": PASSWORD, **fields}
    response = await client.post("/v1/auth/signup", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# The password settings of an app left at its defaults, for code under test without an app.
DEFAULTS = Settings(_env_file=None)
DEFAULT_BOUNDS = Argon2Bounds.from_settings(DEFAULTS)


def default_context() -> CryptContext:
    """The CryptContext of an app with the default ARGON2_* settings."""
    return make_context(Argon2Parameters.from_settings(DEFAULTS))
