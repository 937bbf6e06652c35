"""Group commit for jobs that are a request's only write: forgot-password and verify-email/send
by address queue a mail job and change nothing else.

Such a job shares no transaction with a change, so what it costs is its commit: the BEGIN and
COMMIT round trips, a WAL flush, the NOTIFY of pgqueuer's statement trigger and an ORM session
around it, more than the whole rest of the request (docs/performance.md, "Speed:
forgot-password next to /me"). Here the requests that arrive while one batch is being written
wait for the next batch, which writes them all in one statement on the plain asyncpg pool:
under load many requests share one commit, and a request that comes alone is written at once
(no timer, so no added latency).

A request still answers only after its job is committed, so nothing acknowledged is lost, and
a failed write fails every request of its batch, as it would have failed each one alone. A job
that belongs with a change of rows is never written here: it goes through `jobs.enqueue` in
the change's own transaction.
"""

import asyncio
from collections.abc import Mapping
from typing import Any

from app.db import LookupPool
from app.services import jobs

# One statement: the jobs and their log rows, as jobs.enqueue_where writes them. A statement
# outside a transaction is its own transaction, so both INSERTs commit together or not at all.
INSERT_BATCH = """
WITH queued AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, headers, status)
    SELECT priority, kind, convert_to(payload, 'UTF8'), now(), CAST(headers AS jsonb), 'queued'
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
        AS job(kind, payload, headers, priority)
    RETURNING id, entrypoint, priority
)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
SELECT id, 'queued', entrypoint, priority FROM queued
"""

# A bound on one statement's size; more waiting requests go in the next batch.
MAX_BATCH = 500

_Waiting = tuple[jobs.QueuedRow, "asyncio.Future[None]"]


class JobBatcher:
    def __init__(self, lookups: LookupPool) -> None:
        self._lookups = lookups
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def enqueue(self, kind: str, payload: Mapping[str, Any], *, app_id: str) -> None:
        """Queue a job and return once it is committed (with whichever others were waiting)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((jobs.queued_row(kind, payload, app_id=app_id), done))
        if self._writer is None:
            # One batch in flight at a time: whoever comes meanwhile rides the next one.
            self._writer = asyncio.create_task(self._write())
        # Shielded: a client that hangs up does not take its job out of a batch being written.
        await asyncio.shield(done)

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                rows = [row for row, _ in batch]
                try:
                    async with self._lookups.connection() as conn:
                        await conn.execute(
                            INSERT_BATCH,
                            [row.kind for row in rows],
                            [row.payload for row in rows],
                            [row.headers for row in rows],
                            [row.priority for row in rows],
                        )
                except BaseException as exc:
                    for _, done in batch:
                        if isinstance(exc, Exception):
                            done.set_exception(exc)
                        else:  # cancelled at shutdown: the waiting requests end too
                            done.cancel()
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for _, done in batch:
                        done.set_result(None)
        finally:
            # At once, not in a done-callback: an enqueue between this writer's last look at
            # the queue and a later callback would start no writer, and wait forever.
            self._writer = None
