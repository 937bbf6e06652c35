"""For the JWT tests: an app of its own (a node) on the suite's database, and verifying a token
against a JWKS the way a resource server does."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
from fastapi import FastAPI

from app import clock
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_settings

ISSUER = Settings(_env_file=None).public_url
CLAIMS = {"iss", "aud", "sub", "sid", "role", "email", "email_verified", "iat", "exp", "jti"}


@asynccontextmanager
async def node(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A started app (one node, with its own key-ring cache) and a client of it."""
    application: FastAPI = create_app(make_settings(database_url, **overrides))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            c.app = application  # type: ignore[attr-defined]
            yield c


async def access_token(client: httpx.AsyncClient, session_token: str) -> str:
    response = await client.post(
        "/v1/auth/token", headers={"Authorization": f"Bearer {session_token}"}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def jwks(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    keys: dict[str, Any] = response.json()
    return keys


def kid(token: str) -> str:
    found: str = jwt.get_unverified_header(token)["kid"]
    return found


def verify(token: str, keys: dict[str, Any], audience: str) -> dict[str, Any]:
    """The claims, if the token verifies with the key its kid names in `keys`. Expiry is
    checked against app.clock (tests move it), not the wall clock PyJWT would use."""
    header = jwt.get_unverified_header(token)
    (jwk,) = [k for k in keys["keys"] if k["kid"] == header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "require": sorted(CLAIMS)},
    )
    if claims["exp"] <= clock.now().timestamp():
        raise jwt.ExpiredSignatureError("expired (by app.clock)")
    return claims
