"""A stolen refresh token refreshed in a tight loop while the owner or an admin revokes: every
revocation answers 200 (never a 500 "deadlock detected") and takes effect — the thief's last
pair stops working, whichever of the two transactions reached the database first."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.admin_support import auth, default_app, make_admin
from tests.helpers import PASSWORD, bearer, signup

ROUNDS = 20
_passwords = itertools.count()


async def _signin(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    response = await client.post("/v1/auth/signin", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


class Thief:
    """Refreshes the stolen pair back to back until a refresh is refused."""

    def __init__(self, client: httpx.AsyncClient, pair: dict) -> None:
        self.client = client
        self.session_token = pair["session_token"]
        self.refresh_token = pair["refresh_token"]
        self.statuses: list[int] = []
        self.started = asyncio.Event()

    async def run(self) -> None:
        for _ in range(200):
            response = await self.client.post(
                "/v1/auth/refresh", json={"refresh_token": self.refresh_token}
            )
            self.statuses.append(response.status_code)
            self.started.set()
            if response.status_code != 200:
                return
            self.session_token = response.json()["session_token"]
            self.refresh_token = response.json()["refresh_token"]


Revocation = Callable[[httpx.AsyncClient, dict, dict, str], Awaitable[httpx.Response]]


async def _revoke_all(client, owner, admin, password):
    return await client.delete(f"/v1/admin/users/{owner['user']['id']}/sessions", headers=admin)


async def _ban(client, owner, admin, password):
    return await client.post(f"/v1/admin/users/{owner['user']['id']}/ban", json={}, headers=admin)


async def _change_password(client, owner, admin, password):
    return await client.post(
        "/v1/auth/change-password",
        json={"current_password": password, "new_password": f"{PASSWORD}-{next(_passwords)}"},
        headers=bearer(owner["session_token"]),
    )


async def _admin_set_password(client, owner, admin, password):
    return await client.put(
        f"/v1/admin/users/{owner['user']['id']}/password",
        json={"password": f"{PASSWORD}-{next(_passwords)}"},
        headers=admin,
    )


@pytest.mark.parametrize(
    "revoke",
    [_revoke_all, _ban, _change_password, _admin_set_password],
    ids=["revoke-all", "ban", "change-password", "admin-set-password"],
)
async def test_revocation_wins_against_a_refresh_loop(client, pg, revoke: Revocation):
    admin = auth(await make_admin(pg, await default_app(pg)))
    failures: list[tuple[object, ...]] = []
    for round_ in range(ROUNDS):
        owner = await signup(client)
        thief = Thief(client, await _signin(client, owner["user"]["email"]))
        loop = asyncio.create_task(thief.run())
        await thief.started.wait()
        revoked = await revoke(client, owner, admin, PASSWORD)
        await asyncio.wait_for(loop, 30)
        if revoked.status_code != 200:
            failures.append((round_, "revocation", revoked.status_code, revoked.text))
        if 500 in thief.statuses:
            failures.append((round_, "refresh", thief.statuses))
        # Whatever the thief holds now was issued before the revocation or refused after it.
        me = await client.get("/v1/auth/me", headers=bearer(thief.session_token))
        again = await client.post("/v1/auth/refresh", json={"refresh_token": thief.refresh_token})
        if me.status_code not in (401, 403) or again.status_code not in (401, 403):
            failures.append((round_, "still works", me.status_code, again.status_code))
    assert failures == []
