"""`python -m app import-users FILE.jsonl`, run as the operator runs it: a subprocess on the
suite's database. Bad lines are reported by line number and never stop the others; a second
run of the same file creates nothing."""

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt
import httpx

from tests import admin_support
from tests.helpers import PASSWORD
from tests.process_support import ROOT, process_env


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "import-users", *args],
        cwd=ROOT,
        env=process_env(DATABASE_URL=database_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _at_once(count: int, path: Path, database_url: str) -> tuple[list[int], list[str]]:
    """`count` imports of the file started together: their exit codes and stdouts."""
    command = [sys.executable, "-m", "app", "import-users", str(path)]
    runs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=process_env(DATABASE_URL=database_url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    return [run.returncode for run in runs], [out + err for out, err in outputs]


def _write(path: Path, lines: list[Any]) -> Path:
    """Each item a line: a dict as JSON, a str as it is."""
    text = "\n".join(item if isinstance(item, str) else json.dumps(item) for item in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


BCRYPT = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
GOOD = [
    {"email": "one@example.com", "password_hash": BCRYPT, "email_verified": True},
    {"email": "two@example.com", "name": "Two"},
    {"email": "three@example.com", "username": "three"},
]


async def test_bad_lines_are_reported_by_line_number_and_the_rest_imported(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "users.jsonl",
        [GOOD[0], "{not json", GOOD[1], "", {"email": "nope"}, GOOD[2], {"email": 7}],
    )

    result = _cli(str(path), database_url=database_url)

    assert result.returncode == 1, result.stderr
    assert "line 2: not valid JSON" in result.stderr
    assert "line 5: email: is not a valid e-mail address" in result.stderr
    assert "line 7: email: must be a string" in result.stderr
    assert "line 4" not in result.stderr  # a blank line is no row
    assert "created 3, updated 0, skipped 0, errors 3 (6 rows in" in result.stdout
    assert "Traceback" not in result.stderr and "\r" not in result.stderr  # no TTY: no bar
    emails = await pg.fetch("SELECT email FROM users ORDER BY email")
    assert [r["email"] for r in emails] == [
        "one@example.com",
        "three@example.com",
        "two@example.com",
    ]


async def test_a_second_run_of_the_same_file_skips_every_row(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", GOOD)
    first = _cli(str(path), database_url=database_url)
    assert first.returncode == 0, first.stderr
    ids = await pg.fetch("SELECT id FROM users ORDER BY id")

    second = _cli(str(path), database_url=database_url)

    assert second.returncode == 0, second.stderr
    assert "created 0, updated 0, skipped 3, errors 0" in second.stdout
    assert await pg.fetch("SELECT id FROM users ORDER BY id") == ids


async def test_a_second_run_with_update_changes_nothing(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", GOOD)
    assert _cli(str(path), database_url=database_url).returncode == 0

    again = _cli(str(path), "--on-conflict", "update", database_url=database_url)

    assert again.returncode == 0, again.stderr
    assert "created 0, updated 0, skipped 3, errors 0" in again.stdout
    updated = await pg.fetchval("SELECT count(*) FROM audit_events WHERE action = 'user.updated'")
    assert updated == 0


async def test_imported_users_sign_in_and_are_audited_as_the_operator(
    database_url: str, pg: asyncpg.Connection, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", GOOD[:1])
    assert _cli(str(path), database_url=database_url).returncode == 0

    response = await client.post(
        "/v1/auth/signin", json={"email": "one@example.com", "password": PASSWORD}
    )

    assert response.status_code == 200, response.text
    rows = await admin_support.audit_rows(pg, action="user.created")
    assert [(r["actor_type"], r["user_agent"]) for r in rows] == [("system", "userkeep-cli")]


async def test_errors_file_lists_every_error(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", [{"email": f"bad{i}"} for i in range(25)])
    errors = tmp_path / "errors.jsonl"

    result = _cli(str(path), "--errors", str(errors), database_url=database_url)

    assert result.returncode == 1
    assert result.stderr.count("\nline ") + result.stderr.startswith("line ") == 20
    assert "… and 5 more errors" in result.stderr
    listed = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [item["line"] for item in listed] == list(range(1, 26))
    assert all(item["error"].startswith("email: ") for item in listed)


async def test_the_app_and_environment_can_be_named(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    acme = await admin_support.make_app(pg, "acme")
    path = _write(tmp_path / "users.jsonl", GOOD[:1])

    result = _cli(str(path), "--app", "acme", "--env", "production", database_url=database_url)

    assert result.returncode == 0, result.stderr
    row = await pg.fetchrow("SELECT app_id, env_id FROM users")
    assert row is not None and tuple(row) == acme


async def test_an_unknown_app_or_a_missing_file_is_a_one_line_error(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", GOOD)
    unknown = _cli(str(path), "--app", "nowhere", database_url=database_url)
    missing = _cli(str(tmp_path / "absent.jsonl"), database_url=database_url)

    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: app not found")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_two_imports_of_one_file_at_once_create_each_user_once(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    """Both processes race on every row (each writes two batches at a time): the unique index
    decides, the loser's rows are skipped, and no run fails."""
    rows = [{"email": f"race{i}@example.com"} for i in range(2500)]
    path = _write(tmp_path / "users.jsonl", rows)
    codes, outputs = _at_once(2, path, database_url)

    assert codes == [0, 0], outputs
    created = [int(out.split("created ")[1].split(",")[0]) for out in outputs]
    assert sum(created) == 2500
    assert await pg.fetchval("SELECT count(*) FROM users") == 2500
    audited = await pg.fetchval("SELECT count(*) FROM audit_events WHERE action = 'user.created'")
    assert audited == 2500


async def test_a_conflict_with_error_is_reported_by_line(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", [GOOD[0], GOOD[1], GOOD[0]])

    result = _cli(str(path), "--on-conflict", "error", database_url=database_url)

    assert result.returncode == 1
    assert "line 3: email: a user with this address already exists" in result.stderr
    assert "created 2, updated 0, skipped 0, errors 1" in result.stdout


def _on_a_terminal(path: Path, database_url: str) -> tuple[int, bytes]:
    """import-users with stderr on a pty: (exit code, what the terminal showed)."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "import-users", str(path)],
        cwd=ROOT,
        env=process_env(DATABASE_URL=database_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 1)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the pty closed: the process is done with it
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return process.returncode, shown


async def test_a_terminal_sees_a_progress_line(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path / "users.jsonl", [{"email": f"p{i}@example.com"} for i in range(1500)])

    code, shown = _on_a_terminal(path, database_url)

    assert code == 0, shown
    assert b"\r1,000 rows: 1,000 created" in shown
    assert b"\r1,500 rows: 1,500 created" in shown
