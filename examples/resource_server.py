"""The other side of Userkeep's JWT access tokens: a service that trusts them without calling
Userkeep on each request. It fetches the public keys from Userkeep's JWKS once, keeps them, and
verifies each token's signature, algorithm, issuer, audience and expiry in-process.

    USERKEEP_URL=http://127.0.0.1:8000 USERKEEP_APP_ID=aapp_… \\
        uvicorn --factory examples.resource_server:from_env --port 9000
    curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:9000/whoami

Settings (environment): USERKEEP_URL (where the JWKS is), USERKEEP_APP_ID (the `aud` tokens
must carry: the aapp_ id of this service's app), USERKEEP_ISSUER (the `iss`: Userkeep's
PUBLIC_URL; default USERKEEP_URL), JWKS_MIN_REFETCH (seconds between two fetches caused by
unknown `kid`s; default 10).

A token stays valid until its `exp` (Userkeep's JWT_TTL, 5 minutes by default) even if the user
signs out or is banned meanwhile; a service that must see that at once asks
POST /v1/auth/introspect instead.
"""

import asyncio
import os
import time
from typing import Annotated, Any

import httpx
import jwt
from fastapi import FastAPI, Header, HTTPException

# Userkeep signs with these; a token naming any other `alg` (`none`, HS256) is refused.
ALGORITHMS = ("EdDSA", "ES256")
# Clocks of two machines differ a little: seconds of grace on exp and iat.
LEEWAY = 5


class KeySet:
    """Userkeep's public keys by `kid`. Fetched again when older than the JWKS's max-age, or
    when a token names a `kid` we do not have (a rotation) — but at most once per
    `min_refetch` seconds, so tokens with made-up kids cannot make us flood Userkeep."""

    def __init__(self, jwks_url: str, min_refetch: float = 10.0, max_age: float = 300.0) -> None:
        self.jwks_url = jwks_url
        self.min_refetch = min_refetch
        self.max_age = max_age
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    def cached(self, kid: str) -> jwt.PyJWK | None:
        """The key, if held and not stale: the per-request path, no I/O."""
        if time.monotonic() - self.fetched_at > self.max_age:
            return None
        return self.keys.get(kid)

    async def get(self, kid: str) -> jwt.PyJWK | None:
        key = self.cached(kid)
        if key is not None:
            return key
        async with self._lock:
            stale = time.monotonic() - self.fetched_at > self.max_age
            may_refetch = time.monotonic() - self.fetched_at >= self.min_refetch
            if (kid not in self.keys and may_refetch) or stale:
                await self._fetch()
        return self.keys.get(kid)

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.jwks_url)
            response.raise_for_status()
        self.keys = {
            jwk["kid"]: jwt.PyJWK(jwk)
            for jwk in response.json()["keys"]
            if jwk.get("alg") in ALGORITHMS
        }
        self.fetched_at = time.monotonic()


def verify(token: str, key: jwt.PyJWK, audience: str, issuer: str) -> dict[str, Any]:
    """The token's claims, or jwt.InvalidTokenError. Only the algorithm of the key its `kid`
    names is accepted, so a token cannot choose how it is checked."""
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience=audience,
        issuer=issuer,
        leeway=LEEWAY,
        options={"require": ["iss", "aud", "sub", "sid", "iat", "exp"]},
    )
    return claims


def create_app(userkeep_url: str, app_id: str, issuer: str | None = None, **keyset: Any) -> FastAPI:
    userkeep_url = userkeep_url.rstrip("/")
    keys = KeySet(f"{userkeep_url}/.well-known/jwks.json", **keyset)
    expected_issuer = (issuer or userkeep_url).rstrip("/")
    app = FastAPI(title="Userkeep resource server example")

    async def claims_of(authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise jwt.InvalidTokenError("unknown signing key")
            return verify(token, key, app_id, expected_issuer)
        except jwt.InvalidTokenError as exc:
            raise HTTPException(
                401, f"invalid token: {exc}", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None

    @app.get("/whoami")
    async def whoami(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return await claims_of(authorization)

    app.state.keys = keys
    return app


def from_env() -> FastAPI:
    return create_app(
        os.environ["USERKEEP_URL"],
        os.environ["USERKEEP_APP_ID"],
        os.environ.get("USERKEEP_ISSUER"),
        min_refetch=float(os.environ.get("JWKS_MIN_REFETCH", "10")),
    )
