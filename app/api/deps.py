"""Request-scoped dependencies: the database session, the caller's origin and principal."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.api.schemas import AppRef, EnvRef
from app.db import LookupPool
from app.security.client_ip import client_ip
from app.security.passwords import PasswordHasher
from app.services import audit, impersonation, sessions
from app.services.audit import Origin
from app.services.job_batches import JobBatcher
from app.services.ratelimit import Rules
from app.services.sessions import Principal
from app.settings import Settings

bearer = HTTPBearer(
    auto_error=False,
    description="`/v1/auth`: a session token (`ukst_…`, the `session_token` of sign-up, sign-in "
    "or refresh). `/v1/admin`: the session token of a user whose role is `admin`, or an API key "
    "(`ask_…`, from `POST /v1/admin/api-keys` or `python -m app create-api-key`); "
    "`POST /v1/auth/introspect`: an API key only.",
)


# The dependencies below that only read request state are `async def` although they await
# nothing: FastAPI runs a plain `def` dependency in its thread pool, a hand-off that costs far
# more than the work (four of them cost ~0.3 ms of server CPU per forgot-password request, of
# ~1.9 ms; the forgot row of bench.run). None of them may block.


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as db:
        yield db


async def get_lookups(request: Request) -> LookupPool:
    """The plain asyncpg pool of one-statement reads (db.LookupPool), outside any session."""
    lookups: LookupPool = request.app.state.lookups
    return lookups


async def get_job_batcher(request: Request) -> JobBatcher:
    """Group commit for jobs that are a request's only write (services/job_batches.py)."""
    batcher: JobBatcher = request.app.state.job_batcher
    return batcher


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


async def get_origin(request: Request) -> Origin:
    """Who sent the request; worked out once per request (the per-IP limit asks first)."""
    origin: Origin | None = getattr(request.state, "origin", None)
    if origin is None:
        peer = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-for")
        origin = Origin(
            ip=client_ip(peer, forwarded, request.app.state.proxies),
            user_agent=request.headers.get("user-agent"),
        )
        request.state.origin = origin
    return origin


async def hash_admission(request: Request) -> AsyncIterator[None]:
    """For routes that hash a password: 503 at once when too many already wait to."""
    hasher: PasswordHasher = request.app.state.hasher
    async with hasher.admission():
        yield


# The place in line ends with the route function, not after the response is sent: with
# keep-alive, a client's next request can arrive before a "request"-scoped exit has run, and
# would find its own previous, finished request still counted.
HashAdmission = Depends(hash_admission, scope="function")


async def get_rules(request: Request) -> Rules:
    rules: Rules = request.app.state.rate_limits
    return rules


def rate_limit(rule: str) -> Callable[..., Awaitable[None]]:
    """A dependency counting one request against the per-IP rule `rule` (429 past it)."""

    async def per_ip_limit(request: Request) -> None:
        # The request alone, not get_rules and get_origin as dependencies of their own: it is
        # on most routes, and each dependency FastAPI solves costs ~2% of a cheap one (a
        # Faroe get_user). get_origin keeps what it found for the route's own From.
        rules: Rules = request.app.state.rate_limits
        await rules.per_ip(rule, (await get_origin(request)).ip)

    return per_ip_limit


async def get_tenant_headers(
    x_app_id: Annotated[AppRef | None, Header(description="app slug or aapp_ id")] = None,
    x_env_id: Annotated[EnvRef | None, Header(description="environment slug or aenv_ id")] = None,
) -> dict[str, str]:
    """The app/env a public call targets, from headers; the body's app_id/env_id win over them."""
    refs = {"app_id": x_app_id, "env_id": x_env_id}
    return {k: v for k, v in refs.items() if v}


def record_caller(request: Request, user_id: str | None, api_key_id: str | None = None) -> None:
    """Who an authenticated request acts as, for its access-log line (app/middleware.py)."""
    request.state.user_id = user_id
    request.state.api_key_id = api_key_id


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    # The plain lookup pool, not the request's session: GET /me never opens a SQLAlchemy
    # session at all.
    principal = await sessions.authenticate(
        request.app.state.lookups, credentials.credentials if credentials else None
    )
    record_caller(request, principal.user.id)
    if principal.impersonated_by is not None:
        audit.impersonation.set(impersonation.acting(principal))
    return principal


async def get_own_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller of a route only the user themselves may use — not an admin impersonating
    them (services/impersonation: password, e-mail, deletion, factors, tokens). get_principal
    called, not depended on: one dependency fewer to solve on POST /v1/auth/token."""
    principal = await get_principal(request, credentials)
    impersonation.ensure_not_impersonated(principal)
    return principal


async def get_optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | None:
    """The caller of a route that also serves signed-out callers: None without a bearer
    token; a token that is sent must be valid (401 otherwise)."""
    if credentials is None:
        return None
    return await get_principal(request, credentials)


Db = Annotated[AsyncSession, Depends(get_db)]
Lookups = Annotated[LookupPool, Depends(get_lookups)]
Batcher = Annotated[JobBatcher, Depends(get_job_batcher)]
Config = Annotated[Settings, Depends(get_settings)]
Hasher = Annotated[PasswordHasher, Depends(get_hasher)]
From = Annotated[Origin, Depends(get_origin)]
Caller = Annotated[Principal, Depends(get_principal)]
OwnCaller = Annotated[Principal, Depends(get_own_principal)]
MaybeCaller = Annotated[Principal | None, Depends(get_optional_principal)]
Tenant = Annotated[dict[str, str], Depends(get_tenant_headers)]
Limits = Annotated[Rules, Depends(get_rules)]
