"""The CLI and the `make run` path: a real server process on its own embedded PostgreSQL."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL"}}
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_create_admin_creates_then_promotes(database_url, pg):
    env = _env(DATABASE_URL=database_url)
    created = _cli("create-admin", "--email", "Boss@Example.com", "--password", PASSWORD, env=env)
    assert created.returncode == 0, created.stderr
    row = await pg.fetchrow("SELECT id, role, email_verified FROM users")
    assert row["role"] == "admin" and row["email_verified"] is True
    assert row["id"] in created.stdout

    await pg.execute("UPDATE users SET role = 'user'")
    promoted = _cli("create-admin", "--email", "boss@example.com", "--password", "ignored", env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert "promoted" in promoted.stdout
    assert await pg.fetchval("SELECT role FROM users") == "admin"
    assert await pg.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-email", "--password", PASSWORD], "email"),
        (["--email", "a@example.com", "--password", "short"], "at least"),
        (["--email", "a@example.com", "--password", PASSWORD, "--app", "nope"], "app not found"),
    ],
)
async def test_create_admin_bad_input_is_one_line_error(database_url, pg, args, message):
    result = _cli("create-admin", *args, env=_env(DATABASE_URL=database_url))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


def test_serve_on_embedded_postgres_with_cli_alongside(tmp_path):
    """`make run` in miniature: serve, create an admin while it runs, sign in, stop with
    Ctrl-C (SIGINT), and find the embedded server stopped and its data kept."""
    port = _free_port()
    env = _env(DATA_DIR=str(tmp_path / "data"), PORT=str(port), LOG_LEVEL="warning")
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)

        created = _cli(
            "create-admin", "--email", "ops@example.com", "--password", PASSWORD, env=env
        )
        assert created.returncode == 0, created.stderr
        signin = httpx.post(
            f"{base}/v1/auth/signin", json={"email": "ops@example.com", "password": PASSWORD}
        )
        assert signin.status_code == 200, signin.text
        assert signin.json()["user"]["role"] == "admin"
        # The CLI joined the running server and did not stop it on its way out.
        assert httpx.get(f"{base}/v1/ready").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    pgdata = tmp_path / "data" / "postgres"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "embedded PostgreSQL left running"
