"""create_app(settings) -> FastAPI: routers, the error envelope, and the database lifecycle."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from alembic.script import ScriptDirectory
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app import db as database
from app.api import (
    admin,
    admin_impersonation,
    admin_import,
    admin_stats,
    admin_webhooks,
    auth,
    auth_email,
    auth_mfa,
    docs,
    faroe,
    health,
    pages,
    tokens,
)
from app.api.admin_import import IMPORT_PATH
from app.api.openapi import operation_id, restore_null_examples
from app.errors import (
    TYPE_OF_STATUS,
    ApiError,
    BadRequest,
    DatabaseUnavailable,
    InternalError,
    TransactionConflict,
    UnsupportedMediaType,
    ValidationFailed,
    envelope,
)
from app.metrics import Metrics
from app.middleware import BodyLimit, Observe, RequestId, SecurityHeaders
from app.security import secret_box
from app.security.passwords import PasswordHasher
from app.services import jobs, ratelimit, signing_keys, tenancy
from app.services.job_batches import JobBatcher
from app.settings import Settings, get_settings, unsafe_modes

log = logging.getLogger("userkeep")

DESCRIPTION = """
Self-hosted user management. Sign up or sign in under **auth**, press **Authorize** and paste
the `session_token`, then try `GET /v1/auth/me`.

Every error has one shape: `{"error": "...", "code": 403, "type": "user_banned"}`, plus
`details` on a 422 and `ban_expires` on a `user_banned` 403 when the ban ends. Each operation
lists the errors it can return, each with an example. Two follow a rule instead: 503
`service_unavailable` (with `Retry-After`) is listed on every operation that uses the
database, since any of them can meet an outage; 500 `internal_error` is listed nowhere, since a
500 is a bug, not an answer.
"""

# The prefix pydantic puts before the message of a ValueError raised in a validator; the
# field name already says what failed.
VALUE_ERROR_PREFIX = "Value error, "


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if problem := _unreadable_body(exc):
            return JSONResponse(problem.body(), status_code=problem.status)
        details = [
            {
                "field": _field(tuple(err.get("loc", ()))),
                "message": str(err.get("msg", "")).removeprefix(VALUE_ERROR_PREFIX),
            }
            for err in exc.errors()
        ]
        first = details[0] if details else {"field": "body", "message": "invalid"}
        failed = ValidationFailed(first["field"], first["message"])
        return JSONResponse({**failed.body(), "details": details}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and (problem := _unreadable_body(exc)):
            return JSONResponse(problem.body(), status_code=problem.status)
        type_ = TYPE_OF_STATUS.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else type_.replace("_", " ")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route of the path; Allow must
            # list every method the resource has (RFC 9110 section 15.5.6).
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return JSONResponse(
            envelope(exc.status_code, type_, message.lower()),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        answer: ApiError
        if _is_unavailable(exc):
            log.warning("database unavailable request_id=%s: %s", request_id, type(exc).__name__)
            answer = DatabaseUnavailable()
        elif database.is_retryable(exc):
            # A deadlock or serialization failure that outlasted db.retrying's attempts: the
            # change was rolled back whole, and trying again is the right thing to do.
            state = database.sqlstate(exc)
            log.warning("transaction conflict request_id=%s: sqlstate %s", request_id, state)
            answer = TransactionConflict()
        else:
            log.exception("unhandled error request_id=%s", request_id)
            answer = InternalError(f"internal error (request id {request_id})")
        return JSONResponse(answer.body(), status_code=answer.status, headers=answer.headers)


def _unreadable_body(exc: Exception) -> ApiError | None:
    """The answer when the request body is not JSON text at all. FastAPI would
    answer a 422 "JSON decode error" at a character offset for a syntax error, a bare 400
    "error parsing the body" for bytes that are not UTF-8, nesting too deep for the parser
    (RecursionError) or a number of too many digits, and for a body of another media type it
    validates the raw bytes as if they were the object (a misleading 422)."""
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            reason = str((errors[0].get("ctx") or {}).get("error") or "invalid")
            return BadRequest(f"request body is not valid JSON: {reason.lower()}")
        if isinstance(exc.body, bytes | bytearray):
            # FastAPI parses only application/json (and +json) bodies, so text/plain, a form
            # or no Content-Type at all leave the body as bytes.
            return UnsupportedMediaType()
        return None
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return BadRequest("request body is not valid JSON: nested too deeply")
    if isinstance(cause, UnicodeDecodeError):
        return BadRequest("request body is not UTF-8 text")
    if isinstance(cause, ValueError):
        return BadRequest()
    return None


def _allowed_methods(request: Request) -> str:
    """Every method some route answers on the request's path, for a 405's Allow header."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


def _is_unavailable(exc: BaseException) -> bool:
    """Errors that mean "the database is not there right now", not "the code is wrong"."""
    return database.is_unavailable(exc)


def migration_head() -> str:
    head = ScriptDirectory(str(database.MIGRATIONS_DIR)).get_current_head()
    return head or ""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    for message in unsafe_modes(settings):
        log.warning(message)
    secret_box.announce(settings)
    embedded = None
    if settings.database_url:
        url = settings.database_url
    else:
        # Started without `python -m app serve` (e.g. `uvicorn --factory app.main:create_app`).
        import asyncio

        from app.embedded import resolve_database_url

        url, embedded = await asyncio.to_thread(resolve_database_url, settings)
    if settings.migrate_on_start:
        await database.migrate_async(url)
    engine = database.create_engine(url, settings)
    app.state.engine = engine
    app.state.sessions = database.session_factory(engine)
    app.state.reads = database.read_session_factory(engine)
    app.state.lookups = database.LookupPool(url, settings)
    await app.state.lookups.open()
    app.state.job_batcher = JobBatcher(app.state.lookups)
    app.state.hasher = PasswordHasher.from_settings(settings)
    app.state.rate_limits = ratelimit.build(settings, engine, app.state.lookups)
    app.state.signing_keys = signing_keys.KeyRing(app.state.sessions, settings)
    app.state.migration_head = migration_head()
    async with app.state.sessions() as db:
        await tenancy.ensure_default_app(db)
    # Everything loaded so far (modules, routes, schemas) lives as long as the process: keep it
    # out of the garbage collector's full passes, whose pauses are the p99 of short requests.
    gc.collect()
    gc.freeze()
    worker = None
    if settings.jobs_in_serve:
        # Each of `serve`'s WORKERS processes runs one loop with its share of JOBS_CONCURRENCY.
        concurrency = jobs.per_process_concurrency(settings, settings.workers)
        worker = jobs.Worker(settings, url, app.state.sessions, concurrency)
        worker.start()
    try:
        yield
    finally:
        if worker is not None:
            await worker.stop()
        await app.state.rate_limits.limiter.store.close()
        await app.state.lookups.close()
        await engine.dispose()
        if embedded is not None:
            embedded.stop()


class Userkeep(FastAPI):
    """FastAPI, with the nulls of the models' examples kept in /openapi.json."""

    def openapi(self) -> dict[str, Any]:
        fresh = self.openapi_schema is None
        spec = super().openapi()
        if fresh:
            restore_null_examples(spec)
        return spec


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = Userkeep(
        title="Userkeep",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # app/api/docs.py serves these itself, from local files and as FastAPI routes.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        openapi_tags=[
            {"name": "auth", "description": "Sign-up, sign-in and the caller's own account."},
            {
                "name": "admin",
                "description": "User administration for admins (a session of a user whose "
                "role is `admin`) and API keys (`Authorization: Bearer ask_…`). Admins and "
                "keys of the `default` app act on every app (`app_id`); others on their own.",
            },
            {
                "name": "faroe",
                "description": "The Faroe user-server endpoint: a Faroe auth server stores and "
                "reads its users here (docs/faroe.md). Requests are signed with FAROE_SECRET "
                "(`X-Faroe-Timestamp`, `X-Faroe-Signature`); answers are Faroe's exact bytes, "
                "not the error envelope.",
            },
            {"name": "operations", "description": "Health and readiness probes."},
        ],
    )
    app.state.settings = settings
    app.state.proxies = settings.trusted_networks()
    install_error_handlers(app)
    # The routers are tried in this order, every route's pattern in turn (FastAPI has no
    # prefix shortcut), so the busiest come first: Faroe's one route (get_user is the busiest
    # call of a Faroe deployment; matched after every admin route it cost a tenth of the
    # call), the token and introspection calls of other services, then /me. The docs keep
    # the tags' order above.
    app.include_router(faroe.router)
    app.include_router(tokens.router)
    app.include_router(auth.router)
    app.include_router(auth_email.router)
    app.include_router(auth_mfa.router)
    app.include_router(admin.router)
    app.include_router(admin_import.router)
    app.include_router(admin_impersonation.router)
    app.include_router(admin_stats.router)
    app.include_router(admin_webhooks.router)
    app.include_router(health.router)
    # The pages the mails' links open when an app has no front end of its own (PUBLIC_URL).
    app.include_router(pages.router)
    app.include_router(docs.router)
    app.state.metrics = Metrics(app.state)
    # Each add wraps the previous: SecurityHeaders is the outermost (app/middleware.py).
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        # 1,000 users with hashes and metadata do not fit in 64 KiB.
        larger={IMPORT_PATH: settings.import_max_body_bytes},
    )
    app.add_middleware(Observe, metrics=app.state.metrics)
    app.add_middleware(RequestId)
    app.add_middleware(SecurityHeaders, pages=docs.PAGES | pages.PAGES)
    return app
