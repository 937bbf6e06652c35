"""examples/resource_server.py against a real Userkeep: both served over HTTP on free ports.

Userkeep runs in this process (uvicorn), so the test can move its clock to issue a token that has
already expired; the example runs as its own process, as its docstring says to run it, and checks
expiry against the real clock. The key is rotated with `python -m app rotate-signing-key`.
"""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import asyncpg
import httpx
import jwt
import uvicorn
from fastapi import FastAPI

from app import clock
from app.main import create_app
from app.services import signing_keys
from tests.admin_support import make_app
from tests.conftest import SECRET_KEY, _asyncpg, make_settings
from tests.helpers import bearer, signup
from tests.jwt_support import kid
from tests.process_support import ROOT, free_port, process_env


@asynccontextmanager
async def userkeep(database_url: str) -> AsyncIterator[tuple[str, httpx.AsyncClient, FastAPI]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    application = create_app(make_settings(database_url, public_url=base))
    server = uvicorn.Server(uvicorn.Config(application, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "userkeep did not start"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=base) as client:
            yield base, client, application
    finally:
        server.should_exit = True
        await task


UVICORN = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--factory"]


@contextmanager
def resource_server(userkeep_url: str, app_id: str) -> Iterator[str]:
    port = free_port()
    env = process_env(
        USERKEEP_URL=userkeep_url,
        USERKEEP_APP_ID=app_id,
        # Refetch on every unknown kid: the test does not wait out the example's 10 s.
        JWKS_MIN_REFETCH="0",
    )
    process = subprocess.Popen(
        [*UVICORN, "examples.resource_server:from_env", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            print(process.stdout.read()[-4000:], file=sys.stderr)
            process.stdout.close()


async def _whoami(client: httpx.AsyncClient, base: str, token: str) -> httpx.Response:
    # The example may still be starting: retry while the port refuses connections.
    for _ in range(300):
        try:
            return await client.get(f"{base}/whoami", headers=bearer(token))
        except httpx.ConnectError:
            await asyncio.sleep(0.05)
    raise AssertionError("the example resource server did not start")


def _rotate(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "rotate-signing-key"],
        cwd=ROOT,
        env=process_env(DATABASE_URL=database_url, SECRET_KEY=SECRET_KEY),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "signing key ajwk_" in result.stdout


async def _token(client: httpx.AsyncClient, session_token: str) -> str:
    response = await client.post("/v1/auth/token", headers=bearer(session_token))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def test_the_example_accepts_good_tokens_and_refuses_the_rest(database_url):
    async with userkeep(database_url) as (base, client, application):
        user = await signup(client)
        stranger = await signup(client, app_id=(await _other_app(client, database_url)))
        with resource_server(base, user["user"]["app_id"]) as example:
            async with httpx.AsyncClient(timeout=10) as http:
                good = await _token(client, user["session_token"])
                answer = await _whoami(http, example, good)
                assert answer.status_code == 200, answer.text
                claims = answer.json()
                assert (claims["sub"], claims["aud"]) == (
                    user["user"]["id"],
                    user["user"]["app_id"],
                )

                # Expired: issued JWT_TTL + a minute ago.
                clock.advance(-timedelta(seconds=360))
                expired = await _token(client, user["session_token"])
                clock.reset()
                refused = await _whoami(http, example, expired)
                assert refused.status_code == 401 and "expired" in refused.json()["detail"]

                head, payload, signature = good.split(".")
                tampered = jwt.utils.base64url_encode(
                    jwt.utils.base64url_decode(payload).replace(b'"user"', b'"admin"')
                ).decode()
                forged = await _whoami(http, example, f"{head}.{tampered}.{signature}")
                assert forged.status_code == 401

                other_audience = await _token(client, stranger["session_token"])
                wrong = await _whoami(http, example, other_audience)
                assert wrong.status_code == 401 and "audience" in wrong.json()["detail"].lower()

                unsigned = jwt.encode(
                    dict(claims),
                    None,  # type: ignore[arg-type]  # alg "none" takes no key
                    algorithm="none",
                    headers={"kid": kid(good)},
                )
                assert (await _whoami(http, example, unsigned)).status_code == 401
                assert (await _whoami(http, example, "not-a-jwt")).status_code == 401

                # Rotation: the next key is published at once and the old one keeps signing;
                # the example verifies both. Then the grace is made to have passed (in the rows:
                # the example checks iat and exp against the real clock, which cannot be moved).
                _rotate(database_url)
                ring = application.state.signing_keys
                ring.forget()
                late_old = await _token(client, user["session_token"])
                assert kid(late_old) == kid(good)
                assert (await _whoami(http, example, late_old)).status_code == 200
                await _pass_the_grace(database_url)
                ring.forget()
                rotated = await _token(client, user["session_token"])
                assert kid(rotated) != kid(good)
                # A kid the example has not seen: it fetches the JWKS again, once.
                assert (await _whoami(http, example, rotated)).status_code == 200
                assert (await _whoami(http, example, late_old)).status_code == 200


async def _pass_the_grace(database_url: str) -> None:
    conn = await asyncpg.connect(**_asyncpg(database_url))
    try:
        shift = signing_keys.ROTATION_GRACE
        await conn.execute(
            "UPDATE signing_keys SET activated_at = activated_at - $1::interval "
            "WHERE retired_at IS NULL",
            shift,
        )
        await conn.execute(
            "UPDATE signing_keys SET retired_at = retired_at - $1::interval "
            "WHERE retired_at IS NOT NULL",
            shift,
        )
    finally:
        await conn.close()


async def _other_app(client: httpx.AsyncClient, database_url: str) -> str:
    conn = await asyncpg.connect(**_asyncpg(database_url))
    try:
        app_id, _ = await make_app(conn, "elsewhere")
    finally:
        await conn.close()
    return app_id


def test_the_example_needs_its_settings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERKEEP_")}
    result = subprocess.run(
        [sys.executable, "-c", "import examples.resource_server as m; m.from_env()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "USERKEEP_URL" in result.stderr
