"""Apps and environments: the default tenant, and resolving the app/env a public call targets."""

from sqlalchemy import select, text
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

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
