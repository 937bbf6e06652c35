"""Small helpers shared by the tests: sign a user up, build auth headers."""

import itertools
from typing import Any

import httpx

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
