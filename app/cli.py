"""`python -m app serve | migrate | create-admin | create-api-key | purge`: the same settings
and database as the server.

With no DATABASE_URL the embedded PostgreSQL under DATA_DIR is used; a command run while the
server is up joins the running embedded server instead of starting a second one.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from app import db as database
from app.settings import Settings, get_settings

T = TypeVar("T")


def serve(settings: Settings) -> None:
    import uvicorn

    from app import logs

    # JSON lines from the start (migrations, the embedded server); uvicorn applies the same
    # config again in each worker process.
    log_config = logs.config(settings.log_level)
    logs.configure(settings.log_level)
    url, embedded = database.resolve_database_url(settings)
    try:
        database.migrate(url)
        # Workers re-read settings from the environment: hand them the resolved URL, and the
        # migrations are done once here rather than once per worker.
        os.environ["DATABASE_URL"] = url
        os.environ["MIGRATE_ON_START"] = "false"
        print(f"Userkeep on http://{settings.host}:{settings.port}/docs", file=sys.stderr)
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=log_config,
            # app/middleware.py writes the access log, with the route template and the user.
            access_log=False,
        )
    finally:
        if embedded is not None:
            embedded.stop()


def migrate(settings: Settings) -> None:
    url, embedded = database.resolve_database_url(settings)
    try:
        database.migrate(url)
        print("database at head", file=sys.stderr)
    finally:
        if embedded is not None:
            embedded.stop()


async def _create_admin(url: str, settings: Settings, email: str, password: str, app: str) -> str:
    from app.services import admin_cli

    return await admin_cli.create_admin(url, settings, email, password, app)


def create_admin(settings: Settings, email: str, password: str, app: str) -> None:
    url, embedded = database.resolve_database_url(settings)
    try:
        database.migrate(url)
        message = asyncio.run(_create_admin(url, settings, email, password, app))
        print(message)
    finally:
        if embedded is not None:
            embedded.stop()


def _run(settings: Settings, work: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """Run one operator action against the configured (or embedded) database, migrated."""
    url, embedded = database.resolve_database_url(settings)
    try:
        database.migrate(url)
        return asyncio.run(work(url))
    finally:
        if embedded is not None:
            embedded.stop()


def create_api_key(settings: Settings, app: str, name: str) -> None:
    from app.services import admin_cli

    message, secret = _run(settings, lambda url: admin_cli.create_api_key(url, settings, app, name))
    # The secret alone on stdout (KEY=$(python -m app create-api-key …)); it is not stored.
    print(message + "; the secret below is shown only once", file=sys.stderr)
    print(secret)


def purge(settings: Settings, user_id: str | None) -> None:
    from app.services import admin_cli

    print(_run(settings, lambda url: admin_cli.purge(url, settings, user_id)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description="Userkeep")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="migrate, then serve on HOST:PORT")
    sub.add_parser("migrate", help="upgrade the database schema to head")
    admin = sub.add_parser("create-admin", help="create a user with role admin, or promote one")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.add_argument("--app", default="default", help="app slug (default: default)")
    key = sub.add_parser("create-api-key", help="create an admin API key; prints its secret once")
    key.add_argument("--app", default="default", help="app slug (default: default)")
    key.add_argument("--name", required=True, help="what the key is for")
    purge_cmd = sub.add_parser(
        "purge", help="erase soft-deleted users past RETENTION_DAYS (or one deleted user now)"
    )
    purge_cmd.add_argument("--user-id", help="erase this soft-deleted user (ausr_…) now")
    args = parser.parse_args(argv)

    settings = get_settings()
    try:
        if args.command == "serve":
            serve(settings)
        elif args.command == "migrate":
            migrate(settings)
        elif args.command == "create-admin":
            create_admin(settings, args.email, args.password, args.app)
        elif args.command == "create-api-key":
            create_api_key(settings, args.app, args.name)
        elif args.command == "purge":
            purge(settings, args.user_id)
    except KeyboardInterrupt:
        pass
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class UserError(Exception):
    """A CLI mistake to report in one line, without a traceback."""
