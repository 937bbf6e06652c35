"""Overload control for password hashing: past a short queue the answer is an immediate 503."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.security.passwords import PasswordHasher
from tests.conftest import make_settings
from tests.helpers import PASSWORD, unique_email


@pytest.fixture
async def small_queue_app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url, hash_concurrency=1, hash_queue_max=2)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_a_burst_past_the_queue_gets_503_with_retry_after_and_writes_nothing(
    small_queue_app: FastAPI, pg
) -> None:
    transport = httpx.ASGITransport(app=small_queue_app, client=("198.51.100.20", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
        emails = [unique_email("burst") for _ in range(40)]
        responses = await asyncio.gather(
            *(c.post("/v1/auth/signup", json={"email": e, "password": PASSWORD}) for e in emails)
        )
    statuses = [r.status_code for r in responses]
    # One hashing, two waiting: at least those three succeed; the rest are turned away.
    assert set(statuses) == {201, 503}, statuses
    assert statuses.count(201) >= 3
    for email, response in zip(emails, responses, strict=True):
        if response.status_code == 503:
            assert response.json()["type"] == "service_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        count = await pg.fetchval("SELECT count(*) FROM users WHERE email = $1", email)
        assert count == (1 if response.status_code == 201 else 0)
    assert small_queue_app.state.hasher.waiting == 0


@pytest.mark.parametrize(
    ("cores", "workers", "expected"), [(2, 1, 2), (2, 2, 1), (2, 4, 1), (8, 2, 4)]
)
def test_by_default_the_workers_share_the_cores_for_hashing(
    database_url: str, monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, expected: int
) -> None:
    # More hashes at once than cores only make each slower (argon2id's 19 MiB evict each
    # other): with WORKERS processes, each hashes cores / WORKERS at once.
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    settings = make_settings(database_url, workers=workers)
    assert PasswordHasher.from_settings(settings).concurrency == expected


def test_hash_concurrency_set_by_the_operator_wins(database_url: str) -> None:
    settings = make_settings(database_url, workers=2, hash_concurrency=3)
    assert PasswordHasher.from_settings(settings).concurrency == 3
