"""The CLI and the `make run` path: a real server process on its own embedded PostgreSQL."""

import os
import pty
import select
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import PASSWORD, signup
from tests.process_support import ROOT, free_port, process_env, serving


def _cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    # stdin is always a pipe (empty unless given): never the terminal pytest may run in.
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


ADMIN_PASSWORD = "operator-chosen-passphrase-9"


async def _signin(client, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/signin", json={"email": email, "password": password})


async def test_create_admin_with_password_stdin_can_sign_in(database_url, pg, client):
    created = _cli(
        "create-admin",
        "--email",
        "Boss@Example.com",
        "--password-stdin",
        env=process_env(DATABASE_URL=database_url),
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stderr
    row = await pg.fetchrow("SELECT id, role, email_verified FROM users")
    assert row["role"] == "admin" and row["email_verified"] is True
    assert row["id"] in created.stdout
    signin = await _signin(client, "boss@example.com", ADMIN_PASSWORD)
    assert signin.status_code == 200, signin.text
    assert signin.json()["user"]["role"] == "admin"
    assert await pg.fetchval("SELECT action FROM audit_events") == "admin.created"


async def test_create_admin_with_password_from_environment_can_sign_in(database_url, pg, client):
    env = process_env(DATABASE_URL=database_url, USERKEEP_ADMIN_PASSWORD=ADMIN_PASSWORD)
    created = _cli("create-admin", "--email", "ops@example.com", env=env)
    assert created.returncode == 0, created.stderr
    signin = await _signin(client, "ops@example.com", ADMIN_PASSWORD)
    assert signin.status_code == 200, signin.text
    assert signin.json()["user"]["role"] == "admin"


async def test_create_admin_without_a_password_source_is_an_error(database_url, pg):
    result = _cli(
        "create-admin", "--email", "ops@example.com", env=process_env(DATABASE_URL=database_url)
    )
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr and "USERKEEP_ADMIN_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_create_admin_takes_no_password_on_the_command_line(database_url, pg):
    """A password in argv is visible to every user of the machine (ps, /proc, shell history)."""
    result = _cli(
        "create-admin",
        "--email",
        "ops@example.com",
        "--password",
        ADMIN_PASSWORD,
        env=process_env(DATABASE_URL=database_url),
    )
    assert result.returncode == 2
    assert "--password" in result.stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


def _prompted(database_url: str, answers: list[str]) -> tuple[int, str]:
    """create-admin on a terminal: type each answer when a prompt appears; (exit code, stderr).

    A new session has no controlling terminal, so getpass reads the pty given as stdin; each
    answer waits for its prompt, since getpass flushes what was typed before it asks."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "create-admin", "--email", "tty@example.com"],
        cwd=ROOT,
        env=process_env(DATABASE_URL=database_url),
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(terminal)
    assert process.stderr is not None
    seen = b""
    try:
        deadline = time.monotonic() + 60
        for asked, answer in enumerate(answers):
            while seen.count(b"assword") <= asked:
                assert time.monotonic() < deadline, seen.decode()
                ready, _, _ = select.select([process.stderr], [], [], 1)
                if ready:
                    chunk = os.read(process.stderr.fileno(), 4096)
                    assert chunk, seen.decode()
                    seen += chunk
            os.write(main, answer.encode() + b"\n")
        process.wait(timeout=60)
        seen += process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
        process.stderr.close()
        if process.stdout is not None:
            process.stdout.close()
    return process.returncode, seen.decode()


async def test_create_admin_prompts_twice_on_a_terminal(database_url, client):
    code, stderr = _prompted(database_url, [ADMIN_PASSWORD, ADMIN_PASSWORD])
    assert code == 0, stderr
    signin = await _signin(client, "tty@example.com", ADMIN_PASSWORD)
    assert signin.status_code == 200, signin.text


async def test_create_admin_prompt_answers_must_match(database_url, pg):
    code, stderr = _prompted(database_url, [ADMIN_PASSWORD, ADMIN_PASSWORD + "x"])
    assert code == 2
    assert "do not match" in stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_create_admin_refuses_an_existing_account(database_url, pg, client):
    """Someone signed up with the operator's e-mail first: create-admin must not hand them the
    admin role, and must not pretend the operator's password was set."""
    await signup(client, email="root@example.com", password=PASSWORD)
    result = _cli(
        "create-admin",
        "--email",
        "ROOT@Example.com",
        "--password-stdin",
        env=process_env(DATABASE_URL=database_url),
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "already exists" in lines[0] and "--promote-existing" in lines[0]
    assert await pg.fetchval("SELECT role FROM users") == "user"
    assert (await _signin(client, "root@example.com", PASSWORD)).status_code == 200
    assert (await _signin(client, "root@example.com", ADMIN_PASSWORD)).status_code == 401
    assert await pg.fetchval("SELECT count(*) FROM audit_events WHERE action LIKE 'admin.%'") == 0


async def test_create_admin_promote_existing_keeps_the_password(database_url, pg, client):
    data = await signup(client, email="lead@example.com", password=PASSWORD)
    result = _cli(
        "create-admin",
        "--email",
        "LEAD@example.com",
        "--promote-existing",
        env=process_env(DATABASE_URL=database_url),
    )
    assert result.returncode == 0, result.stderr
    assert "promoted" in result.stdout and "its password is unchanged" in result.stdout
    assert await pg.fetchval("SELECT role FROM users") == "admin"
    assert await pg.fetchval("SELECT count(*) FROM users") == 1
    signin = await _signin(client, "lead@example.com", PASSWORD)
    assert signin.status_code == 200 and signin.json()["user"]["role"] == "admin"
    audit = await pg.fetchrow(
        "SELECT target_user_id, actor_type FROM audit_events WHERE action = 'admin.promoted'"
    )
    assert audit is not None
    assert (audit["target_user_id"], audit["actor_type"]) == (data["user"]["id"], "system")


async def test_create_admin_promote_existing_without_the_account_is_an_error(database_url, pg):
    result = _cli(
        "create-admin",
        "--email",
        "nobody@example.com",
        "--promote-existing",
        env=process_env(DATABASE_URL=database_url, USERKEEP_ADMIN_PASSWORD=ADMIN_PASSWORD),
    )
    assert result.returncode == 2
    assert "no account" in result.stderr and "Traceback" not in result.stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["--email", "not-an-email"], PASSWORD, "email"),
        (["--email", "a@example.com"], "short", "at least"),
        (["--email", "a@example.com", "--app", "nope"], PASSWORD, "app not found"),
    ],
)
async def test_create_admin_bad_input_is_one_line_error(database_url, pg, args, password, message):
    env = process_env(DATABASE_URL=database_url)
    result = _cli("create-admin", *args, "--password-stdin", env=env, stdin=password + "\n")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


def test_a_bad_setting_is_a_one_line_error(database_url):
    env = process_env(DATABASE_URL=database_url, FAROE_SECRET="too-short")
    result = _cli("migrate", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "FAROE_SECRET" in result.stderr and "at least 32 bytes" in result.stderr
    assert "too-short" not in result.stderr


def test_serve_on_embedded_postgres_with_cli_alongside(tmp_path):
    """`make run` in miniature: serve, create an admin while it runs, sign in, stop with
    Ctrl-C (SIGINT), and find the embedded server stopped and its data kept."""
    env = process_env(DATA_DIR=str(tmp_path / "data"), LOG_LEVEL="warning")
    with serving(env, free_port()) as base:
        created = _cli(
            "create-admin",
            "--email",
            "ops@example.com",
            "--password-stdin",
            env=env,
            stdin=PASSWORD,
        )
        assert created.returncode == 0, created.stderr
        signin = httpx.post(
            f"{base}/v1/auth/signin", json={"email": "ops@example.com", "password": PASSWORD}
        )
        assert signin.status_code == 200, signin.text
        assert signin.json()["user"]["role"] == "admin"
        # The CLI joined the running server and did not stop it on its way out.
        assert httpx.get(f"{base}/v1/ready").status_code == 200
    pgdata = tmp_path / "data" / "postgres"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "embedded PostgreSQL left running"
