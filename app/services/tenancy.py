"""Apps and environments: the default tenant, and resolving the app/env a public call targets."""

from sqlalchemy import select, text
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import LookupPool
from app.errors import NotFound
from app.ids import Prefix, is_valid, new_id
from app.models import App, Environment

DEFAULT_APP = "default"
DEFAULT_ENV = "production"


async def ensure_default_app(db: AsyncSession) -> None:
    """Create the `default` app and its `production` environment; safe to run on every start."""
    async with db.begin():
        await db.execute(
            text(
                "INSERT INTO apps (id, slug, name) VALUES (:id, :slug, 'Default app') "
                "ON CONFLICT (slug) DO NOTHING"
            ),
            {"id": new_id(Prefix.APP), "slug": DEFAULT_APP},
        )
        await db.execute(
            text(
                "INSERT INTO environments (id, app_id, slug, name, is_default) "
                "SELECT :id, a.id, :slug, 'Production', true FROM apps a WHERE a.slug = :app "
                "ON CONFLICT DO NOTHING"
            ),
            {"id": new_id(Prefix.ENV), "slug": DEFAULT_ENV, "app": DEFAULT_APP},
        )


async def resolve(db: AsyncSession, app_ref: str | None, env_ref: str | None) -> Environment:
    """The environment a public request targets: app by slug or `aapp_` id (default app when
    absent), environment by slug or `aenv_` id (the app's default when absent)."""
    app_ref = app_ref or DEFAULT_APP
    column = col(App.id) if is_valid(app_ref, Prefix.APP) else col(App.slug)
    app_id = (await db.execute(select(col(App.id)).where(column == app_ref))).scalar_one_or_none()
    if app_id is None:
        raise NotFound("app not found")
    query = select(Environment).where(col(Environment.app_id) == app_id)
    if env_ref is None:
        query = query.where(col(Environment.is_default))
    elif is_valid(env_ref, Prefix.ENV):
        query = query.where(col(Environment.id) == env_ref)
    else:
        query = query.where(col(Environment.slug) == env_ref)
    env: Environment | None = (await db.execute(query)).scalar_one_or_none()
    if env is None:
        raise NotFound("environment not found")
    return env


def target_join(app_ref: str | None, env_ref: str | None) -> tuple[str, str, list[str]]:
    """The part of a hand-written statement that finds what `resolve` finds: the condition on
    `environments e` to LEFT JOIN it to `apps a` with, the condition on `a`, and their
    parameters ($1, and $2 when `env_ref` is given). No row is no app; a row whose e.id is NULL
    is no environment. Only these constant conditions go into the text; references are
    parameters."""
    app_ref = app_ref or DEFAULT_APP
    app_match = "a.id = $1" if is_valid(app_ref, Prefix.APP) else "a.slug = $1"
    args = [app_ref]
    if env_ref is None:
        env_match = "e.is_default"
    else:
        env_match = "e.id = $2" if is_valid(env_ref, Prefix.ENV) else "e.slug = $2"
        args.append(env_ref)
    return f"e.app_id = a.id AND {env_match}", app_match, args


def ensure_found(app_id: str | None, env_id: str | None) -> tuple[str, str]:
    """`resolve`'s 404s for a row of a statement built on `target_join`."""
    if app_id is None:
        raise NotFound("app not found")
    if env_id is None:
        raise NotFound("environment not found")
    return app_id, env_id


async def resolve_ids(
    lookups: LookupPool, app_ref: str | None, env_ref: str | None
) -> tuple[str, str]:
    """(app id, environment id) of what `resolve` finds, with the same rules and 404s, in one
    prepared statement on the plain asyncpg pool outside any transaction: for a request that
    needs only the ids (forgot-password, verify-email/send), where `resolve`'s transaction and
    two ORM selects cost more than the rest of its work."""
    env_join, app_match, args = target_join(app_ref, env_ref)
    query = (
        "SELECT a.id, e.id FROM apps a LEFT JOIN environments e "  # noqa: S608
        f"ON {env_join} WHERE {app_match}"
    )
    async with lookups.connection() as conn:
        row = await conn.fetchrow(query, *args)
    if row is None:
        raise NotFound("app not found")
    return ensure_found(row[0], row[1])
