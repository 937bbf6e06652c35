"""MFA for the tests: codes computed from the secret at the controllable clock's time step."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pyotp

from app import clock
from app.services import mfa
from tests.helpers import PASSWORD, bearer, signup


def step_now() -> int:
    return mfa.time_step(clock.now())


def code_at(secret: str, step: int) -> str:
    """What an authenticator app shows during `step`."""
    return str(pyotp.TOTP(secret).generate_otp(step))


def align_to_step() -> None:
    """Move the clock to just after a step boundary: a test then has the whole step (29 s of
    wall time) before "now" moves on to the next one, so nothing depends on timing."""
    into = clock.now().timestamp() % mfa.STEP_SECONDS
    clock.advance(timedelta(seconds=mfa.STEP_SECONDS - into + 0.2))


def next_step() -> int:
    """Move on by one step (a code of the previous one was used) and align; the new step."""
    align_to_step()
    return step_now()


@dataclass
class Enrolled:
    user: dict[str, Any]
    session_token: str
    secret: str
    recovery_codes: list[str]

    @property
    def email(self) -> str:
        return str(self.user["email"])

    def code(self) -> str:
        """A fresh code: the clock moves to the next step, past any code used so far."""
        return code_at(self.secret, next_step())


async def enroll(client: httpx.AsyncClient, **signup_fields: Any) -> Enrolled:
    """A new user with MFA on (its first code confirmed in the current step)."""
    signed = await signup(client, **signup_fields)
    token = signed["session_token"]
    started = await client.post(
        "/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=bearer(token)
    )
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    align_to_step()
    confirmed = await client.post(
        "/v1/auth/mfa/totp/confirm",
        json={"code": code_at(secret, step_now())},
        headers=bearer(token),
    )
    assert confirmed.status_code == 200, confirmed.text
    return Enrolled(signed["user"], token, secret, confirmed.json()["recovery_codes"])


async def mfa_token(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """The token of a right password for a user with MFA on."""
    answer = await client.post("/v1/auth/signin", json={"email": email, "password": password})
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["type"] == "mfa_required", body
    return str(body["mfa_token"])


async def challenge(client: httpx.AsyncClient, token: str, **factor: str) -> httpx.Response:
    return await client.post("/v1/auth/mfa/challenge", json={"mfa_token": token, **factor})
