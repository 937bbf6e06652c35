"""`python -m app serve | worker | migrate | create-admin | create-api-key | purge |
rotate-signing-key | reseal-secrets | import-users`: the same settings and database as the
server.

With no DATABASE_URL the embedded PostgreSQL under DATA_DIR is used; a command run while the
server is up joins the running embedded server instead of starting a second one, and the last
process to let go of it stops it (app/embedded.py). SIGINT, SIGTERM and SIGHUP end every
command through its `finally` blocks (app/signals.py).
"""

import argparse
import asyncio
import getpass
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from app import db as database
from app import embedded, signals
from app.services import admin_cli
from app.services.admin_cli import UserError
from app.settings import Settings, get_settings

T = TypeVar("T")


def worker(settings: Settings) -> None:
    """Run jobs only (a dedicated node): JOBS_CONCURRENCY at once, until SIGTERM, SIGINT or
    SIGHUP."""
    from app import logs
    from app.security import secret_box

    logs.configure(settings.log_level)
    secret_box.announce(settings)
    with embedded.database_url(settings) as url:
        database.migrate(url)
        asyncio.run(_work(settings, url))


async def _work(settings: Settings, url: str) -> None:
    from app.services import jobs

    engine = database.create_engine(url, settings)
    runner = jobs.Worker(settings, url, database.session_factory(engine), settings.jobs_concurrency)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # Stop taking jobs and let the running ones finish (JOBS_SHUTDOWN_GRACE).
        loop.add_signal_handler(signum, runner.request_stop)
    try:
        await runner.run()
    finally:
        await engine.dispose()


def migrate(settings: Settings) -> None:
    with embedded.database_url(settings) as url:
        database.migrate(url)
    print("database at head", file=sys.stderr)


PASSWORD_ENV = "USERKEEP_ADMIN_PASSWORD"  # noqa: S105 - the variable's name


def _password_reader(from_stdin: bool) -> Callable[[], str]:
    """Where a new admin's password comes from: never argv, which every local user can read
    (ps, /proc/PID/cmdline) and which shells keep in their history."""

    def read() -> str:
        if from_stdin:
            password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
            if not password:
                raise UserError("--password-stdin: no password on the first line of stdin")
            return password
        if password := os.environ.get(PASSWORD_ENV, ""):
            return password
        if sys.stdin.isatty():
            password = getpass.getpass("Password for the new admin: ")
            if getpass.getpass("Password again: ") != password:
                raise UserError("the two passwords do not match")
            return password
        raise UserError(
            f"no password: give --password-stdin, set {PASSWORD_ENV}, or run in a terminal "
            "to be asked"
        )

    return read


def create_admin(
    settings: Settings, email: str, app: str, password_stdin: bool, promote_existing: bool
) -> None:
    print(
        _run(
            settings,
            lambda url: admin_cli.create_admin(
                url,
                settings,
                email,
                app,
                read_password=_password_reader(password_stdin),
                promote_existing=promote_existing,
            ),
        )
    )


def _run(settings: Settings, work: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """Run one operator action against the configured (or embedded) database, migrated."""
    with embedded.database_url(settings) as url:
        database.migrate(url)
        return asyncio.run(work(url))


def create_api_key(settings: Settings, app: str, name: str) -> None:
    message, secret = _run(settings, lambda url: admin_cli.create_api_key(url, settings, app, name))
    # The secret alone on stdout (KEY=$(python -m app create-api-key …)); it is not stored.
    print(message + "; the secret below is shown only once", file=sys.stderr)
    print(secret)


def purge(settings: Settings, user_id: str | None) -> None:
    print(_run(settings, lambda url: admin_cli.purge(url, settings, user_id)))


def rotate_signing_key(settings: Settings) -> None:
    print(_run(settings, lambda url: _rotate_signing_key(url, settings)))


async def _rotate_signing_key(url: str, settings: Settings) -> str:
    from app.services import signing_keys

    engine = database.create_engine(url, settings)
    try:
        async with database.session_factory(engine)() as db:
            key = await signing_keys.rotate(db, settings, admin_cli.CLI)
    finally:
        await engine.dispose()
    return (
        f"signing key {key.id} ({key.algorithm}) is published now and signs from "
        f"{key.activated_at.isoformat(timespec='seconds')}; the previous key verifies until "
        f"its last token expires"
    )


def reseal_secrets(settings: Settings) -> None:
    print(_run(settings, lambda url: admin_cli.reseal_secrets(url, settings)))


def import_users(settings: Settings, args: argparse.Namespace) -> None:
    from app.services import import_cli  # the import's modules: only for this command

    if not Path(args.file).is_file():
        raise UserError(f"{args.file}: no such file")
    report = _run(
        settings,
        lambda url: import_cli.import_file(
            url,
            settings,
            Path(args.file),
            app=args.app,
            env=args.env,
            on_conflict=args.on_conflict,
            errors_to=Path(args.errors) if args.errors else None,
        ),
    )
    if report.totals.errors:
        sys.exit(1)  # the other rows are imported; the errors were listed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description="Userkeep")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="migrate, then serve on HOST:PORT")
    sub.add_parser("worker", help="migrate, then run background jobs (no HTTP) until SIGTERM")
    sub.add_parser("migrate", help="upgrade the database schema to head")
    admin = sub.add_parser(
        "create-admin",
        help="create a user with role admin (or promote one: --promote-existing)",
        # Else `--password X` would be read as an abbreviation of --password-stdin.
        allow_abbrev=False,
    )
    # Kept only to say what replaced it: a password in argv is readable by every local user.
    admin.add_argument("--password", dest="argv_password", help=argparse.SUPPRESS)
    admin.add_argument("--email", required=True)
    admin.add_argument("--app", default="default", help="app slug (default: default)")
    source = admin.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the new admin's password from the first line of stdin (else {PASSWORD_ENV}, "
        "else a prompt on a terminal)",
    )
    source.add_argument(
        "--promote-existing",
        action="store_true",
        help="if a live account has this e-mail, make it an admin; its password is not touched",
    )
    key = sub.add_parser("create-api-key", help="create an admin API key; prints its secret once")
    key.add_argument("--app", default="default", help="app slug (default: default)")
    key.add_argument("--name", required=True, help="what the key is for")
    purge_cmd = sub.add_parser(
        "purge", help="erase soft-deleted users past RETENTION_DAYS (or one deleted user now)"
    )
    purge_cmd.add_argument("--user-id", help="erase this soft-deleted user (ausr_…) now")
    sub.add_parser(
        "rotate-signing-key",
        help="add the next JWT signing key: published at once, signing after "
        "the JWKS cache time (5 min)",
    )
    sub.add_parser(
        "reseal-secrets",
        help="seal every stored secret under SECRET_KEY (after a rotation; the old keys in "
        "SECRET_KEY_PREVIOUS can go afterwards)",
    )
    importing = sub.add_parser(
        "import-users",
        help="import users with password hashes from a JSON Lines file (exit 1 if a row failed)",
    )
    importing.add_argument("file", help="one user a line, as in POST /v1/admin/users/import")
    importing.add_argument("--app", default="default", help="app slug or id (default: default)")
    importing.add_argument("--env", help="environment slug or id (default: the app's default)")
    importing.add_argument(
        "--on-conflict",
        choices=("skip", "update", "error"),
        default="skip",
        help="when a live user has the e-mail (default: skip)",
    )
    importing.add_argument("--errors", metavar="FILE", help="write every row error here (JSONL)")
    args = parser.parse_args(argv)
    if args.command == "create-admin" and args.argv_password is not None:
        admin.error(
            f"--password is no longer accepted (argv is visible to other users): use "
            f"--password-stdin, {PASSWORD_ENV}, or the prompt on a terminal"
        )

    try:
        settings = get_settings()
    except ValidationError as exc:
        # One line per bad setting, named as in the environment, without the value given.
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            message = error["msg"].removeprefix("Value error, ")
            print(f"error: {name}: {message}", file=sys.stderr)
        sys.exit(2)
    try:
        with signals.stop_on_signals():
            _dispatch(args, settings)
    except (KeyboardInterrupt, signals.Stopped):
        pass  # everything started was stopped on the way here
    except (UserError, embedded.EmbeddedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "serve":
        from app.serving import serve  # uvicorn and the whole app: only for this command

        serve(settings)
    elif args.command == "worker":
        worker(settings)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "create-admin":
        create_admin(settings, args.email, args.app, args.password_stdin, args.promote_existing)
    elif args.command == "create-api-key":
        create_api_key(settings, args.app, args.name)
    elif args.command == "purge":
        purge(settings, args.user_id)
    elif args.command == "rotate-signing-key":
        rotate_signing_key(settings)
    elif args.command == "reseal-secrets":
        reseal_secrets(settings)
    elif args.command == "import-users":
        import_users(settings, args)
