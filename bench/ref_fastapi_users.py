"""The common alternative for GET /v1/auth/me: fastapi-users, database session strategy.

Runs in its own venv (.data/bench/fastapi-users-venv, the `bench-fastapi-users` extra), since
fastapi-users-db-sqlalchemy pins SQLAlchemy < 2.1:

    BENCH_DATABASE_URL=postgresql+asyncpg://… python -m bench.ref_fastapi_users setup
    BENCH_DATABASE_URL=postgresql+asyncpg://… uvicorn bench.ref_fastapi_users:app --workers 2

Set up as its documentation shows (SQLAlchemy user table, `DatabaseStrategy` on an
`AccessToken` table, `BearerTransport`, the users router), with its tables in their own schema
`fastapi_users` of the same database. `GET /users/me` with `Authorization: Bearer <token>`:
fastapi-users reads the access token row (`token` = the bearer token, not a digest, younger
than `lifetime_seconds`), then the user by id, checks it is active, answers UserRead.
"""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport
from fastapi_users.authentication.strategy.db import DatabaseStrategy
from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from fastapi_users_db_sqlalchemy.access_token import (
    SQLAlchemyAccessTokenDatabase,
    SQLAlchemyBaseAccessTokenTableUUID,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

SCHEMA = "fastapi_users"
SECRET = "bench-only-not-a-secret"
LIFETIME = int(os.environ.get("SESSION_TTL", "3600"))


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class AccessToken(SQLAlchemyBaseAccessTokenTableUUID, Base):
    pass


def make_engine():
    return create_async_engine(
        os.environ["BENCH_DATABASE_URL"],
        pool_size=int(os.environ.get("DB_POOL_SIZE", "10")),
        max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "10")),
        connect_args={"server_settings": {"search_path": SCHEMA}},
    )


engine = make_engine()
session_maker = async_sessionmaker(engine, expire_on_commit=False)


async def get_async_session() -> AsyncIterator[AsyncSession]:
    async with session_maker() as session:
        yield session


async def get_user_db(session: AsyncSession = Depends(get_async_session)):
    yield SQLAlchemyUserDatabase(session, User)


async def get_access_token_db(session: AsyncSession = Depends(get_async_session)):
    yield SQLAlchemyAccessTokenDatabase(session, AccessToken)


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


async def get_user_manager(user_db=Depends(get_user_db)):
    yield UserManager(user_db)


def get_database_strategy(access_token_db=Depends(get_access_token_db)) -> DatabaseStrategy:
    return DatabaseStrategy(access_token_db, lifetime_seconds=LIFETIME)


auth_backend = AuthenticationBackend(
    name="database",
    transport=BearerTransport(tokenUrl="auth/login"),
    get_strategy=get_database_strategy,
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserUpdate(schemas.BaseUserUpdate):
    pass


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)
app.include_router(fastapi_users.get_users_router(UserRead, UserUpdate), prefix="/users")


async def setup() -> None:
    """The schema and fastapi-users' own tables (its DDL, indexes included), when missing."""
    setup_engine = make_engine()
    async with setup_engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await conn.run_sync(Base.metadata.create_all)
    await setup_engine.dispose()


if __name__ == "__main__":
    if sys.argv[1:] != ["setup"]:
        sys.exit("usage: python -m bench.ref_fastapi_users setup")
    asyncio.run(setup())
