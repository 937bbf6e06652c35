"""Apps (tenants) and their environments, as the admin API manages them."""

import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.errors import Conflict, Forbidden
from app.ids import Prefix, new_id
from app.models import App, Environment
from app.services import admin_auth, audit, tenancy
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def clean_slug(value: str) -> str:
    """2-63 characters of lower-case letters, digits and '-', not starting with '-'. Slugs
    never contain '_', so one can never be mistaken for a TypeID."""
    if not SLUG_RE.fullmatch(value):
        raise ValueError("must be 2-63 characters of a-z, 0-9 and '-', starting with a-z or 0-9")
    return value


# The mail settings an app may carry; None = the service's (MAIL_FROM, PUBLIC_URL,
# REQUIRE_EMAIL_VERIFICATION).
MAIL_SETTINGS = ("mail_from", "link_base_url", "require_email_verification")


def app_view(app: App, environments: list[Environment]) -> dict[str, Any]:
    return {
        "id": app.id,
        "slug": app.slug,
        "name": app.name,
        "mail_from": app.mail_from,
        "link_base_url": app.link_base_url,
        "require_email_verification": app.require_email_verification,
        "created_at": app.created_at,
        "environments": [env_view(env) for env in environments],
    }


def env_view(env: Environment) -> dict[str, Any]:
    return {
        "id": env.id,
        "app_id": env.app_id,
        "slug": env.slug,
        "name": env.name,
        "is_default": env.is_default,
        "created_at": env.created_at,
    }


async def _environments(db: AsyncSession, app_ids: list[str]) -> dict[str, list[Environment]]:
    found: dict[str, list[Environment]] = {app_id: [] for app_id in app_ids}
    rows = await db.execute(
        select(Environment)
        .where(col(Environment.app_id).in_(app_ids))
        .order_by(col(Environment.created_at), col(Environment.id))
    )
    for env in rows.scalars():
        found[env.app_id].append(env)
    return found


async def list_apps(db: AsyncSession, principal: AdminPrincipal) -> list[dict[str, Any]]:
    """Every app for a caller of the default app; the caller's own app for everyone else."""
    async with db.begin():
        query = select(App).order_by(col(App.created_at), col(App.id))
        if not principal.is_root:
            query = query.where(col(App.id) == principal.app_id)
        apps = list((await db.execute(query)).scalars())
        environments = await _environments(db, [app.id for app in apps])
    return [app_view(app, environments[app.id]) for app in apps]


async def create_app(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    slug: str,
    name: str,
    mail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A new app and its default `production` environment, in one transaction. Only callers
    of the default app may create apps."""
    if not principal.is_root:
        raise Forbidden("only admins of the default app may create apps")
    try:
        async with db.begin():
            now = clock.now()
            app = App(id=new_id(Prefix.APP), slug=slug, name=name, created_at=now, **(mail or {}))
            env = Environment(
                id=new_id(Prefix.ENV),
                app_id=app.id,
                slug=tenancy.DEFAULT_ENV,
                name="Production",
                is_default=True,
                created_at=now,
            )
            db.add(app)
            await db.flush()
            db.add(env)
            await db.flush()
            audit.record(
                db,
                "app.created",
                origin=origin,
                app_id=app.id,
                env_id=env.id,
                actor_type=principal.actor_type,
                actor_id=principal.actor_id,
                metadata={"slug": slug},
            )
    except IntegrityError:
        raise Conflict(f"an app with slug {slug!r} already exists") from None
    return app_view(app, [env])


async def update_app(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    app_ref: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Change an app's name or mail settings (absent = unchanged, null = the service's)."""
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        app = (
            await db.execute(select(App).where(col(App.id) == app.id).with_for_update())
        ).scalar_one()
        for field, value in changes.items():
            setattr(app, field, value)
        audit.record(
            db,
            "app.updated",
            origin=origin,
            app_id=app.id,
            actor_type=principal.actor_type,
            actor_id=principal.actor_id,
            metadata={"fields": sorted(changes)},
        )
        environments = await _environments(db, [app.id])
    return app_view(app, environments[app.id])


async def list_environments(
    db: AsyncSession, principal: AdminPrincipal, app_ref: str
) -> list[dict[str, Any]]:
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        environments = await _environments(db, [app.id])
    return [env_view(env) for env in environments[app.id]]


async def create_environment(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    app_ref: str,
    slug: str,
    name: str,
    is_default: bool,
) -> dict[str, Any]:
    """A new environment of an app the caller may reach; `is_default` moves the default to it
    (one default per app, enforced by a unique index)."""
    try:
        async with db.begin():
            app = await admin_auth.resolve_app(db, principal, app_ref)
            if is_default:
                await db.execute(
                    update(Environment)
                    .where(col(Environment.app_id) == app.id, col(Environment.is_default))
                    .values(is_default=False)
                )
            env = Environment(
                id=new_id(Prefix.ENV),
                app_id=app.id,
                slug=slug,
                name=name,
                is_default=is_default,
                created_at=clock.now(),
            )
            db.add(env)
            await db.flush()
            audit.record(
                db,
                "environment.created",
                origin=origin,
                app_id=app.id,
                env_id=env.id,
                actor_type=principal.actor_type,
                actor_id=principal.actor_id,
                metadata={"slug": slug, "is_default": is_default},
            )
    except IntegrityError as exc:
        if "uq_environments_app_slug" in str(exc.orig):
            raise Conflict(f"the app already has an environment with slug {slug!r}") from None
        raise Conflict("another environment became the default meanwhile; retry") from None
    return env_view(env)
