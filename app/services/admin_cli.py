"""Operator actions run from the command line (no HTTP), on the same services as the API."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import create_engine, session_factory
from app.errors import ApiError, NotFound
from app.ids import Prefix, is_valid
from app.models import User
from app.security.passwords import PasswordHasher, check_policy

# webhooks is imported for its flush hook: the CLI's changes (create-admin, purge) raise
# webhook events too.
from app.services import (
    admin,
    admin_auth,
    api_keys,
    audit,
    secret_rotation,
    tenancy,
    users,
    webhooks,  # noqa: F401
)
from app.services.audit import Origin
from app.settings import Settings

CLI = Origin(ip=None, user_agent="userkeep-cli")


class UserError(Exception):
    """A CLI mistake to report in one line, without a traceback."""


async def create_admin(
    url: str,
    settings: Settings,
    email: str,
    app: str,
    *,
    read_password: Callable[[], str],
    promote_existing: bool = False,
) -> str:
    """Create the user with role admin in the app's default environment; with
    `promote_existing`, promote the live account that has the e-mail instead.

    An existing account is never promoted by default: anyone may have signed up with the
    operator's e-mail first, and its password (theirs, not the operator's) would stay. The
    password is asked for (`read_password`) only when an account is about to be created."""
    try:
        email = users.clean_email(email)
    except ValueError as exc:
        raise UserError(f"email {exc}") from None
    engine = create_engine(url, settings)
    factory = session_factory(engine)
    try:
        async with factory() as db:
            await tenancy.ensure_default_app(db)
            try:
                async with db.begin():
                    env = await tenancy.resolve(db, app, None)
            except NotFound as exc:
                raise UserError(str(exc)) from None
            async with db.begin():
                existing = (
                    await db.execute(
                        select(User).where(
                            col(User.app_id) == env.app_id,
                            col(User.env_id) == env.id,
                            users.email_matches(email),
                            col(User.deleted_at).is_(None),
                        )
                    )
                ).scalar_one_or_none()
            if promote_existing:
                if existing is None:
                    raise UserError(
                        f"no account with e-mail {email} in app {app} to promote; leave out "
                        "--promote-existing to create one"
                    )
                return await _promote(db, existing.id)
            if existing is not None:
                raise UserError(
                    f"an account with e-mail {existing.email} already exists in app {app} "
                    f"({existing.id}); --promote-existing would make it an admin without "
                    "touching its password"
                )
            return await _create(db, settings, env.app_id, env.id, email, read_password())
    finally:
        await engine.dispose()


def _record(db: AsyncSession, action: str, user: User) -> None:
    """An operator action on `user`, audited as the system."""
    audit.record(
        db,
        action,
        origin=CLI,
        app_id=user.app_id,
        env_id=user.env_id,
        actor_type="system",
        target_user_id=user.id,
    )


async def _promote(db: AsyncSession, user_id: str) -> str:
    async with db.begin():
        user = await users.lock(db, user_id)
        user.role = "admin"
        users.touch(user)
        _record(db, "admin.promoted", user)
    return f"promoted {user.id} <{user.email}> to admin; its password is unchanged"


async def _create(
    db: AsyncSession, settings: Settings, app_id: str, env_id: str, email: str, password: str
) -> str:
    try:
        check_policy(password, settings.password_min_length, settings.password_max_length)
    except ApiError as exc:
        raise UserError(exc.message) from None
    password_hash = await PasswordHasher.from_settings(settings).hash(password)
    try:
        async with db.begin():
            user = await users.insert(
                db,
                app_id=app_id,
                env_id=env_id,
                email=email,
                password_hash=password_hash,
                email_verified=True,
                role="admin",
            )
            _record(db, "admin.created", user)
    except ApiError as exc:
        # Someone signed up with the e-mail while the password was being read.
        raise UserError(exc.message) from None
    return f"created admin {user.id} <{user.email}>"


@asynccontextmanager
async def _session(url: str, settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = create_engine(url, settings)
    try:
        async with session_factory(engine)() as db:
            await tenancy.ensure_default_app(db)
            yield db
    finally:
        await engine.dispose()


async def create_api_key(url: str, settings: Settings, app: str, name: str) -> tuple[str, str]:
    """A new API key for the app: (a description for people, the secret — shown only now)."""
    name = name.strip()
    if not 1 <= len(name) <= 256:
        raise UserError("name must be 1-256 characters")
    async with _session(url, settings) as db:
        try:
            created = await api_keys.create_for(db, CLI, admin_auth.SYSTEM, app, name)
        except NotFound as exc:
            raise UserError(str(exc)) from None
    key = created.key
    return f"created API key {key.id} ({key.name!r}) for app {app}", created.secret


async def purge(url: str, settings: Settings, user_id: str | None) -> str:
    """Erase soft-deleted users past RETENTION_DAYS in every app, or one deleted user now."""
    if user_id is not None and not is_valid(user_id, Prefix.USER):
        raise UserError("--user-id must be a TypeID with prefix ausr_")
    async with _session(url, settings) as db:
        if user_id is None:
            count = await admin.purge_expired(
                db, settings, CLI, admin_auth.SYSTEM, None, every_app=True
            )
            return f"purged {count} user(s) deleted more than {settings.retention_days} days ago"
        try:
            await admin.purge_user(db, CLI, admin_auth.SYSTEM, user_id)
        except ApiError as exc:
            raise UserError(exc.message) from None
        return f"purged {user_id}"


async def reseal_secrets(url: str, settings: Settings) -> str:
    """Every stored secret sealed again under SECRET_KEY (after a rotation)."""
    async with _session(url, settings) as db:
        return (await secret_rotation.reseal_all(db, settings)).summary()
