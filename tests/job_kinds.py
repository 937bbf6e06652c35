"""Job kinds for tests/test_jobs.py only. The app never imports this module: a worker loads it
when JOBS_MODULES=tests.job_kinds (the test's in-process workers and `python -m app worker`
subprocesses alike), and tests/test_jobs.py imports it to enqueue them.

Each run is a row of `test_job_runs` (job id, attempt, worker pid, start, end), written through
the worker's own engine, so the tests can see what ran where and when, across processes."""

import asyncio
import os
from datetime import timedelta

from sqlalchemy import text

from app.services.jobs import Job, JobEnv, PermanentFailure, Retry, job_kind

RUNS_TABLE = """CREATE TABLE IF NOT EXISTS test_job_runs (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    worker int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
)"""

# Flipped by the test: the flaky kind fails while this is set.
FLAKY = {"fail": True}


async def _start(job: Job, env: JobEnv) -> int:
    async with env.sessions() as db, db.begin():
        run_id: int = (
            await db.execute(
                text(
                    "INSERT INTO test_job_runs (job_id, attempt, worker) "
                    "VALUES (:job, :attempt, :worker) RETURNING id"
                ),
                {"job": job.id, "attempt": job.attempt, "worker": os.getpid()},
            )
        ).scalar_one()
        return run_id


async def _end(run_id: int, env: JobEnv) -> None:
    async with env.sessions() as db, db.begin():
        await db.execute(
            text("UPDATE test_job_runs SET ended_at = clock_timestamp() WHERE id = :id"),
            {"id": run_id},
        )


async def _runs(job: Job, env: JobEnv) -> int:
    async with env.sessions() as db:
        count: int = (
            await db.execute(
                text("SELECT count(*) FROM test_job_runs WHERE job_id = :job"), {"job": job.id}
            )
        ).scalar_one()
        return count


@job_kind("test.record", safe_keys=("n",))
async def record(job: Job, env: JobEnv) -> None:
    run_id = await _start(job, env)
    await asyncio.sleep(float(job.payload.get("seconds", 0.05)))
    await _end(run_id, env)


# Three runs: the first, then after 0.4 s, then after 0.8 s more.
@job_kind("test.flaky", retry=Retry(max_attempts=3, first_delay=timedelta(seconds=0.4)))
async def flaky(job: Job, env: JobEnv) -> None:
    run_id = await _start(job, env)
    if FLAKY["fail"]:
        raise RuntimeError("boom")
    await _end(run_id, env)


@job_kind("test.permanent")
async def permanent(job: Job, env: JobEnv) -> None:
    await _start(job, env)
    raise PermanentFailure("the address is refused for good")


@job_kind("test.block")
async def block(job: Job, env: JobEnv) -> None:
    """Blocks on its first run (the test kills that worker); any later run completes."""
    run_id = await _start(job, env)
    if await _runs(job, env) == 1:
        await asyncio.sleep(3600)
    await _end(run_id, env)


# Above test.record: with both queued, a worker takes these first (tests/test_jobs.py).
URGENT_PRIORITY = 5


@job_kind("test.urgent", priority=URGENT_PRIORITY)
async def urgent(job: Job, env: JobEnv) -> None:
    await _end(await _start(job, env), env)
