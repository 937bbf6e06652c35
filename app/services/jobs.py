"""The job layer: everything that leaves the service after the request (mail, webhooks) is a job
in PostgreSQL, run by pgqueuer (notes: why pgqueuer).

- `enqueue(db, kind, payload, app_id=…)` writes the job in the caller's transaction, on the
  asyncpg connection that transaction already holds: one INSERT, so a rolled-back change leaves
  no job and a committed one has its job committed with it.
- `job_kind(name, retry=…, safe_keys=…, priority=…)` registers an async handler. A handler
  that raises is retried with exponential backoff until its kind's `max_attempts`;
  `PermanentFailure` fails it at once. A job that failed for good is held as `failed` until an
  admin retries it.
- `Worker` runs the handlers: inside `serve` (JOBS_IN_SERVE) and in `python -m app worker`.
  pgqueuer picks jobs with FOR UPDATE SKIP LOCKED, so any number of workers on any number of
  nodes never run one job at once; a job whose worker died (no heartbeat for
  JOBS_HEARTBEAT_TIMEOUT) is picked again: delivery is at least once.
- `list_jobs`, `get_job`, `retry_job`: the admins' view, from the `jobs` table that triggers on
  pgqueuer's tables keep (migration 0009). It never shows a payload, only the keys a kind
  marked safe.
"""

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pgqueuer.db import AsyncpgDriver
from pgqueuer.errors import RetryRequested
from pgqueuer.executors import AbstractEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.models import Context, JobId
from pgqueuer.models import Job as QueuedJob
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db as database
from app.errors import Conflict, NotFound, ValidationFailed
from app.services import admin_auth, audit, cursors
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.settings import Settings, mail_transport_description

log = logging.getLogger("userkeep.jobs")

# pgqueuer's headers carry what the `jobs` view needs (migration 0009 reads these names).
APP_HEADER = "userkeep_app_id"
SUMMARY_HEADER = "userkeep_summary"

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "canceled")


class PermanentFailure(Exception):
    """Raised by a handler when trying again cannot help (e.g. the user is gone, the address
    is refused for good): the job fails at once. Its message is shown to admins: no secrets."""


@dataclass(frozen=True)
class Retry:
    """Exponential backoff: the n-th failure waits first_delay * factor**(n-1), capped. Or,
    with `schedule` (`Retry.after(...)`), the n-th failure waits schedule[n-1]: a kind whose
    receivers expect a known timetable (webhooks: Standard Webhooks' retries over a day)."""

    max_attempts: int = 8
    first_delay: timedelta = timedelta(seconds=10)
    factor: float = 2.0
    max_delay: timedelta = timedelta(hours=1)
    schedule: tuple[timedelta, ...] = ()

    @classmethod
    def after(cls, *delays: timedelta) -> "Retry":
        """A retry after each of `delays` in turn, then the job fails: len(delays) + 1
        attempts in all."""
        if not delays:
            raise ValueError("a schedule needs at least one delay")
        return cls(max_attempts=len(delays) + 1, schedule=tuple(delays))

    def delay(self, failures: int) -> timedelta:
        if self.schedule:
            return self.schedule[min(max(failures, 1), len(self.schedule)) - 1]
        seconds = self.first_delay.total_seconds() * self.factor ** max(failures - 1, 0)
        return min(timedelta(seconds=seconds), self.max_delay)


@dataclass(frozen=True)
class Job:
    """What a handler gets: `attempt` is 1 on the first run, and again 1 after a manual retry."""

    id: int
    kind: str
    app_id: str
    payload: dict[str, Any]
    attempt: int


@dataclass(frozen=True)
class JobEnv:
    """What handlers share: the settings and session factories on the worker's engine:
    `sessions` for changes, `reads` (AUTOCOMMIT, db.read_session_factory) for reads of one
    statement that need no BEGIN and COMMIT round trips."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    reads: async_sessionmaker[AsyncSession]


Handler = Callable[[Job, JobEnv], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    name: str
    handler: Handler
    retry: Retry
    safe_keys: frozenset[str]
    priority: int = 0


KINDS: dict[str, Kind] = {}


def job_kind(
    name: str, *, retry: Retry | None = None, safe_keys: Iterable[str] = (), priority: int = 0
) -> Callable[[Handler], Handler]:
    """Register `handler` for jobs of `name`. `safe_keys`: payload keys admins may see (an
    endpoint id, an event type; never a code, a token or an address). `priority`: with a
    backlog, workers take every due job of a higher priority before any of a lower one (then
    the oldest first): a kind whose jobs finish work others started (a delivery after its
    fan-out) goes above the kind that starts it, or a backlog of starts starves the finishes."""

    def register(handler: Handler) -> Handler:
        if name in KINDS:
            raise RuntimeError(f"job kind {name!r} is registered twice")
        KINDS[name] = Kind(name, handler, retry or Retry(), frozenset(safe_keys), priority)
        return handler

    return register


# The modules whose import registers the service's own kinds (named, not imported: they import
# this module).
BUILTIN_KIND_MODULES = ("app.services.email_flows", "app.services.webhooks")


def load_kind_modules(names: str) -> None:
    """Import the built-in kind modules and those of JOBS_MODULES (`names`), whose import
    registers their kinds."""
    extra = (part.strip() for part in names.split(","))
    for name in filter(None, (*BUILTIN_KIND_MODULES, *extra)):
        importlib.import_module(name)


async def enqueue(
    db: AsyncSession,
    kind: str,
    payload: Mapping[str, Any],
    *,
    app_id: str,
    delay: timedelta | None = None,
) -> int:
    """Add a job in the caller's open transaction (`async with db.begin()`): it commits or
    rolls back with the change that caused it. Returns the job's id."""
    summary = _summary(kind, payload)
    if not db.in_transaction():
        # Outside a transaction the INSERT would commit on its own, whatever the change does.
        raise RuntimeError("enqueue() belongs inside the transaction of the change")
    connection = await db.connection()
    raw = await connection.get_raw_connection()
    queries = Queries(AsyncpgDriver(raw.driver_connection))
    ids = await queries.enqueue(
        kind,
        json.dumps(dict(payload), separators=(",", ":")).encode(),
        priority=KINDS[kind].priority,
        execute_after=delay,
        headers={APP_HEADER: app_id, SUMMARY_HEADER: json.dumps(summary)},
    )
    return int(ids[0])


@dataclass(frozen=True)
class QueuedRow:
    """A job as the SQL writers outside pgqueuer's own enqueue insert it (enqueue_where,
    job_batches): its kind and priority, and its payload and headers as JSON text."""

    kind: str
    payload: str
    headers: str
    priority: int = 0


def queued_row(kind: str, payload: Mapping[str, Any], *, app_id: str) -> QueuedRow:
    summary = _summary(kind, payload)
    return QueuedRow(
        kind=kind,
        payload=json.dumps(dict(payload), separators=(",", ":")),
        headers=json.dumps({APP_HEADER: app_id, SUMMARY_HEADER: json.dumps(summary)}),
        priority=KINDS[kind].priority,
    )


def _summary(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload's keys its kind marked safe: all the admins' view shows of a job."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown job kind {kind!r}")
    return {key: payload[key] for key in sorted(spec.safe_keys) if key in payload}


@dataclass(frozen=True)
class Candidate:
    """A job `enqueue_where` adds if its condition holds; `key` is what the condition tests
    besides the app (e.g. a webhook event type)."""

    payload: Mapping[str, Any]
    app_id: str
    key: str


def enqueue_where(
    connection: Connection, kind: str, candidates: Sequence[Candidate], *, condition: str
) -> None:
    """Add each candidate job whose SQL `condition` holds: one statement for all of them,
    whatever the answers (a bulk import raises a thousand events in one flush). The condition
    reads the candidate as `job.app_id` and `job.key`. For callers that cannot await: a
    synchronous SQLAlchemy connection (e.g. from inside a flush, app/services/webhooks.py).
    Writes what pgqueuer's own enqueue writes (the queued row and its log row); the table's
    triggers wake the workers and fill `jobs`."""
    if not candidates:
        return
    rows = [queued_row(kind, c.payload, app_id=c.app_id) for c in candidates]
    # `condition` is the caller's SQL text (never a value from a request): values go in arrays.
    statement = text(
        f"""
        WITH queued AS (
            INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, headers, status)
            SELECT :_priority, :_kind, convert_to(job.payload, 'UTF8'), now(),
                CAST(job.headers AS jsonb), 'queued'
            FROM unnest(CAST(:_payloads AS text[]), CAST(:_headers AS text[]),
                        CAST(:_apps AS text[]), CAST(:_keys AS text[]))
                WITH ORDINALITY AS job(payload, headers, app_id, key, n)
            WHERE {condition}
            ORDER BY job.n
            RETURNING id, entrypoint, priority
        )
        INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
        SELECT id, 'queued', entrypoint, priority FROM queued
        """  # noqa: S608
    )
    connection.execute(
        statement,
        {
            "_kind": kind,
            "_priority": rows[0].priority,
            "_payloads": [row.payload for row in rows],
            "_headers": [row.headers for row in rows],
            "_apps": [c.app_id for c in candidates],
            "_keys": [c.key for c in candidates],
        },
    )


# ---- workers -------------------------------------------------------------------------------


async def _no_entrypoint(job: QueuedJob) -> None:
    raise AssertionError("jobs run through _Executor.execute")


@dataclasses.dataclass
class _Executor(AbstractEntrypointExecutor):
    """Runs one kind's handler and turns its failures into pgqueuer's retry or failure."""

    spec: Kind
    env: JobEnv

    async def execute(self, job: QueuedJob, context: Context) -> None:
        # pgqueuer counts the retries already made (0 on a first run, 0 after a manual retry).
        attempt = job.attempts + 1
        ours = Job(
            id=int(job.id),
            kind=self.spec.name,
            app_id=str((job.headers or {}).get(APP_HEADER, "")),
            payload=json.loads(job.payload) if job.payload else {},
            attempt=attempt,
        )
        try:
            await self.spec.handler(ours, self.env)
        except PermanentFailure:
            log.warning("job %s (%s) failed for good", ours.id, ours.kind)
            raise  # pgqueuer holds it as failed (on_failure="hold")
        except Exception as exc:
            if attempt >= self.spec.retry.max_attempts:
                log.warning("job %s (%s) failed after %d attempts", ours.id, ours.kind, attempt)
                raise
            delay = self.spec.retry.delay(attempt)
            log.info(
                "job %s (%s) attempt %d failed; next in %s", ours.id, ours.kind, attempt, delay
            )
            raise RetryRequested(delay=delay, reason=f"{type(exc).__name__}: {exc}") from exc


# Called as a worker loop ends, in its event loop: a kind's module closes what it kept open
# there (webhooks: kept-alive HTTP connections).
AT_LOOP_END: list[Callable[[], Awaitable[None]]] = []


def at_loop_end(hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    AT_LOOP_END.append(hook)
    return hook


# Pause before a failed worker loop starts again (the database may be restarting).
RESTART_DELAY = 5.0


def per_process_concurrency(settings: Settings, processes: int) -> int:
    """JOBS_CONCURRENCY is the budget of all of `serve`'s WORKERS together (each runs its own
    worker loop); pgqueuer needs at least 2 per loop (its batch is half its cap)."""
    return max(2, math.ceil(settings.jobs_concurrency / max(processes, 1)))


class Worker:
    """One pgqueuer loop on one dedicated asyncpg connection (it LISTENs there for new jobs);
    the handlers use `sessions`, the engine of the process."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        sessions: async_sessionmaker[AsyncSession],
        concurrency: int,
    ) -> None:
        self.settings = settings
        self.url = url
        self.env = JobEnv(settings, sessions, database.read_session_factory(sessions.kw["bind"]))
        self.concurrency = max(concurrency, 2)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.backend_pid: int | None = None  # the server process of the loop's connection

    def start(self) -> None:
        """Run in the background (inside `serve`); `stop()` ends it."""
        self._task = asyncio.create_task(self.run(), name="userkeep-jobs")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run jobs until stop is asked. A loop that fails (the database restarted, the
        connection was cut) is started again after a pause, so an outage does not end the
        worker; its jobs that were running come back through the heartbeat timeout."""
        load_kind_modules(self.settings.jobs_modules)
        while not self._stop.is_set():
            try:
                await self._run_once()
            except Exception:
                log.exception("job worker loop failed; starting again in %.0f s", RESTART_DELAY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=RESTART_DELAY)
        log.info("job worker stopped")

    async def _run_once(self) -> None:
        """One pgqueuer loop until stop is asked; then the running jobs get
        JOBS_SHUTDOWN_GRACE seconds. One still running after that is abandoned with the
        connection: it stays picked, its heartbeat stops, and it runs again elsewhere."""
        connection = await database.connect(self.url, self.settings)
        self.backend_pid = connection.get_server_pid()
        manager = QueueManager(Queries(AsyncpgDriver(connection)))
        for spec in KINDS.values():
            parameters = EntrypointExecutorParameters(
                concurrency_limit=0, func=_no_entrypoint, on_failure="hold"
            )
            manager.register_executor(spec.name, _Executor(parameters, spec, self.env))
        heartbeat = timedelta(seconds=self.settings.jobs_heartbeat_timeout)
        loop = asyncio.create_task(
            manager.run(
                # New jobs wake the loop through LISTEN. The poll is for jobs nothing announces
                # (abandoned ones), and for retries coming due: pgqueuer 1.6 was seen here to
                # sleep through one (a second retry then waited the whole dequeue timeout).
                dequeue_timeout=timedelta(seconds=self.settings.jobs_poll_interval),
                batch_size=max(self.concurrency // 2, 1),
                max_concurrent_tasks=self.concurrency,
                heartbeat_timeout=heartbeat,
            ),
            name="pgqueuer",
        )
        log.info(
            "job worker started: %d at once, kinds %s; mail: %s",
            self.concurrency,
            sorted(KINDS),
            mail_transport_description(self.settings),
        )
        try:
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({loop, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if loop.done():
                loop.result()  # the loop ended by itself: raise what ended it
                raise RuntimeError("the job loop ended by itself")
            manager.shutdown.set()
            done, _ = await asyncio.wait({loop}, timeout=self.settings.jobs_shutdown_grace)
            if not done:
                log.warning("job worker stopped with jobs still running; they will run again")
                # Cut the connection first: cancelled jobs must not be logged as cancelled
                # (pgqueuer would delete them), but stay picked until their heartbeat expires.
                connection.terminate()
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loop
        finally:
            for hook in AT_LOOP_END:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(hook(), timeout=5)
            if not connection.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), timeout=5)


# ---- what admins see -----------------------------------------------------------------------


@dataclass(frozen=True)
class JobQuery:
    app_id: str | None = None
    status: Status | None = None
    kind: str | None = None
    limit: int = 50
    cursor: str | None = None


_COLUMNS = """j.id, j.app_id, j.kind, j.status, j.attempts, j.last_error, j.summary,
    j.created_at, j.updated_at, j.started_at, j.finished_at,
    CASE WHEN j.status = 'queued' THEN q.execute_after END AS run_after"""
_FROM = "FROM jobs j LEFT JOIN pgqueuer q ON q.id = j.id"


def view(row: Mapping[str, Any]) -> dict[str, Any]:
    summary = row["summary"]
    return {
        "id": row["id"],
        "app_id": row["app_id"],
        "kind": row["kind"],
        "status": row["status"],
        "attempts": row["attempts"],
        "max_attempts": KINDS[row["kind"]].retry.max_attempts if row["kind"] in KINDS else None,
        "last_error": row["last_error"],
        "summary": summary if isinstance(summary, dict) else json.loads(summary or "{}"),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "run_after": row["run_after"],
    }


async def list_jobs(db: AsyncSession, principal: AdminPrincipal, query: JobQuery) -> dict[str, Any]:
    """The app's jobs, newest first (ids grow), filtered by status and kind, with a cursor."""
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, query.app_id)
        where = ["j.app_id = :app_id"]
        params: dict[str, Any] = {"app_id": app.id, "limit": query.limit + 1}
        if query.status is not None:
            where.append("j.status = :status")
            params["status"] = query.status
        if query.kind is not None:
            where.append("j.kind = :kind")
            params["kind"] = query.kind
        if query.cursor is not None:
            last_id = cursors.decode(query.cursor).get("job")
            if not isinstance(last_id, int) or isinstance(last_id, bool):
                raise ValidationFailed("cursor", "is not a cursor of this list")
            where.append("j.id < :last_id")
            params["last_id"] = last_id
        statement = text(
            f"SELECT {_COLUMNS} {_FROM} WHERE {' AND '.join(where)} ORDER BY j.id DESC LIMIT :limit"
        )
        rows = [dict(row) for row in (await db.execute(statement, params)).mappings()]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return {
        "jobs": [view(row) for row in rows],
        "limit": query.limit,
        "next_cursor": cursors.encode({"job": rows[-1]["id"]}) if more else None,
    }


async def _find(
    db: AsyncSession, principal: AdminPrincipal, job_id: int, lock: bool = False
) -> dict[str, Any]:
    statement = f"SELECT {_COLUMNS} {_FROM} WHERE j.id = :id"
    if lock:
        statement += " FOR UPDATE OF j"
    row = (await db.execute(text(statement), {"id": job_id})).mappings().first()
    # Another app's job reads as no job at all.
    if row is None or not principal.can_reach(row["app_id"]):
        raise NotFound("job not found")
    return dict(row)


async def get_job(db: AsyncSession, principal: AdminPrincipal, job_id: int) -> dict[str, Any]:
    async with db.begin():
        return view(await _find(db, principal, job_id))


async def retry_job(
    db: AsyncSession, principal: AdminPrincipal, job_id: int, origin: Origin
) -> dict[str, Any]:
    """Queue a failed job again, with its full number of attempts; audited."""
    async with db.begin():
        # Locked: of two retries at once, the second sees the job queued and is refused.
        if (await _find(db, principal, job_id, lock=True))["status"] != "failed":
            raise Conflict("only a failed job can be retried")
        connection = await db.connection()
        raw = await connection.get_raw_connection()
        # pgqueuer moves only a held failure (WHERE status = 'failed'): a second retry racing
        # this one finds the job queued and is refused below.
        await Queries(AsyncpgDriver(raw.driver_connection)).requeue_jobs([JobId(job_id)])
        row = await _find(db, principal, job_id)
        if row["status"] != "queued":
            raise Conflict("only a failed job can be retried")
        audit.record(
            db,
            "job.retried",
            origin=origin,
            app_id=row["app_id"],
            actor_type=principal.actor_type,
            actor_id=principal.actor_id,
            metadata={"job_id": job_id, "kind": row["kind"]},
        )
    return view(row)
