"""The job layer (app/services/jobs.py) on a real PostgreSQL: enqueue shares the caller's
transaction, workers run, retry with backoff and hold failures, admins list and retry them,
a worker SIGKILLed mid-job is made good by the next one, and two workers never share a job.

The job kinds are tests/job_kinds.py's, loaded by workers through JOBS_MODULES."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.services import jobs
from tests import job_kinds
from tests.admin_support import World, build_world
from tests.conftest import make_settings
from tests.process_support import ROOT, free_port, process_env, serving


@pytest.fixture
async def runs(pg: asyncpg.Connection) -> AsyncIterator[None]:
    await pg.execute(job_kinds.RUNS_TABLE)
    yield
    await pg.execute("TRUNCATE test_job_runs")


@asynccontextmanager
async def worker(app: FastAPI, database_url: str) -> AsyncIterator[jobs.Worker]:
    """A worker loop in this process, on the app's engine."""
    settings = make_settings(database_url, jobs_modules="tests.job_kinds", jobs_poll_interval=0.1)
    loop = jobs.Worker(settings, database_url, app.state.sessions, concurrency=4)
    loop.start()
    try:
        yield loop
    finally:
        await loop.stop()


async def enqueue(app: FastAPI, kind: str, app_id: str, **payload: Any) -> int:
    async with app.state.sessions() as db, db.begin():
        return await jobs.enqueue(db, kind, payload, app_id=app_id)


async def wait_status(
    pg: asyncpg.Connection, job_id: int, status: str, seconds: float = 20
) -> None:
    deadline = time.monotonic() + seconds
    while (found := await pg.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)) != status:
        assert time.monotonic() < deadline, f"job {job_id} is {found}, not {status}"
        await asyncio.sleep(0.05)


async def test_a_rolled_back_change_enqueues_nothing(app, pg, runs):
    world = await build_world(pg)
    with pytest.raises(RuntimeError, match="the change failed"):
        async with app.state.sessions() as db, db.begin():
            await db.execute(
                text("UPDATE users SET name = 'Renamed' WHERE id = :id"), {"id": world.target}
            )
            await jobs.enqueue(db, "test.record", {"n": 1}, app_id=world.acme[0])
            raise RuntimeError("the change failed")
    # Only build_world's own job is there.
    assert await pg.fetchval("SELECT array_agg(id) FROM pgqueuer") == [world.failed_job]
    assert await pg.fetchval("SELECT array_agg(id) FROM jobs") == [world.failed_job]
    assert await pg.fetchval("SELECT name FROM users WHERE id = $1", world.target) != "Renamed"


def test_a_retry_schedule_is_followed_then_the_job_fails() -> None:
    retry = jobs.Retry.after(timedelta(seconds=5), timedelta(minutes=5), timedelta(hours=1))
    assert retry.max_attempts == 4
    assert [retry.delay(n) for n in (1, 2, 3)] == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(hours=1),
    ]
    with pytest.raises(ValueError):
        jobs.Retry.after()


async def test_enqueue_outside_a_transaction_is_refused(app):
    async with app.state.sessions() as db:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await jobs.enqueue(db, "test.record", {}, app_id="aapp_x")
        with pytest.raises(ValueError, match="unknown job kind"):
            async with db.begin():
                await jobs.enqueue(db, "no.such.kind", {}, app_id="aapp_x")


async def test_a_committed_job_is_run_and_admins_see_it(app, pg, runs, client, database_url):
    world = await build_world(pg)
    job_id = await enqueue(app, "test.record", world.acme[0], n=7, code="123456")
    async with worker(app, database_url):
        await wait_status(pg, job_id, "succeeded")
    assert await pg.fetchval("SELECT count(*) FROM test_job_runs WHERE job_id = $1", job_id) == 1
    answer = await client.get(f"/v1/admin/jobs/{job_id}", headers=world.callers["admin"])
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["kind"] == "test.record"
    assert job["app_id"] == world.acme[0] and job["finished_at"] is not None
    # Only the keys the kind marks safe: never the code.
    assert job["summary"] == {"n": 7} and "123456" not in answer.text
    listed = await client.get(
        "/v1/admin/jobs", params={"status": "succeeded"}, headers=world.callers["api_key"]
    )
    assert [j["id"] for j in listed.json()["jobs"]] == [job_id]


async def test_failures_back_off_then_fail_and_an_admin_retries(
    app, pg, runs, client, database_url
):
    world = await build_world(pg)
    admin = world.callers["admin"]
    job_kinds.FLAKY["fail"] = True
    job_id = await enqueue(app, "test.flaky", world.acme[0])
    async with worker(app, database_url):
        await wait_status(pg, job_id, "failed")
        starts = [
            row["started_at"]
            for row in await pg.fetch(
                "SELECT started_at FROM test_job_runs WHERE job_id = $1 ORDER BY id", job_id
            )
        ]
        assert len(starts) == 3  # max_attempts, then no more
        first, second = ((b - a).total_seconds() for a, b in pairwise(starts))
        # Retry(first_delay=0.4 s, factor=2): 0.4 s, then 0.8 s.
        # Never early (execute_after), late by little: the poll, the pick, a busy machine.
        assert 0.35 < first < 1.5 and 0.75 < second < 2.5

        failed = (await client.get("/v1/admin/jobs?status=failed", headers=admin)).json()["jobs"]
        # build_world's own failed job, and this one.
        assert [j["id"] for j in failed] == [job_id, world.failed_job]
        assert failed[0]["attempts"] == 3 and failed[0]["max_attempts"] == 3
        assert failed[0]["last_error"] == "RuntimeError: boom"
        queued = await client.get("/v1/admin/jobs?status=queued", headers=admin)
        assert queued.json()["jobs"] == []

        job_kinds.FLAKY["fail"] = False
        retried = await client.post(f"/v1/admin/jobs/{job_id}/retry", headers=admin)
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued"
        await wait_status(pg, job_id, "succeeded")
    again = await client.post(f"/v1/admin/jobs/{job_id}/retry", headers=admin)
    assert again.status_code == 409 and again.json()["type"] == "conflict"
    job = (await client.get(f"/v1/admin/jobs/{job_id}", headers=admin)).json()
    assert job["attempts"] == 4 and job["status"] == "succeeded"


async def test_a_kind_of_higher_priority_runs_before_an_older_backlog(app, pg, runs, database_url):
    """Every way a job is written carries its kind's priority, and a worker facing a backlog
    takes the higher one first: older test.record jobs wait for the newer test.urgent ones."""
    world = await build_world(pg)
    app_id = world.acme[0]
    backlog = [await enqueue(app, "test.record", app_id, seconds=0) for _ in range(6)]
    async with app.state.sessions() as db, db.begin():
        urgent = [await jobs.enqueue(db, "test.urgent", {}, app_id=app_id)]
        connection = await db.connection()
        await connection.run_sync(
            lambda sync: jobs.enqueue_where(
                sync,
                "test.urgent",
                [jobs.Candidate({}, app_id, "k")],
                condition="job.key = 'k'",
            )
        )
    urgent += [
        row["id"] for row in await pg.fetch("SELECT id FROM pgqueuer WHERE id > $1", urgent[0])
    ]
    batched = jobs.queued_row("test.urgent", {}, app_id=app_id)
    assert batched.priority == job_kinds.URGENT_PRIORITY
    priorities = dict(await pg.fetch("SELECT id, priority FROM pgqueuer WHERE id = ANY($1)",
                                     backlog + urgent))  # fmt: skip
    assert len(urgent) == 2
    assert {priorities[i] for i in urgent} == {job_kinds.URGENT_PRIORITY}
    assert {priorities[i] for i in backlog} == {0}
    settings = make_settings(database_url, jobs_modules="tests.job_kinds", jobs_poll_interval=0.1)
    # Two at once: a batch of one, so the order of the picks is the order of the runs.
    loop = jobs.Worker(settings, database_url, app.state.sessions, concurrency=2)
    loop.start()
    try:
        for job_id in backlog + urgent:
            await wait_status(pg, job_id, "succeeded")
    finally:
        await loop.stop()
    order = [
        row["job_id"]
        for row in await pg.fetch("SELECT job_id FROM test_job_runs ORDER BY started_at, id")
    ]
    assert set(order[:2]) == set(urgent), order


async def test_a_permanent_failure_fails_at_once(app, pg, runs, client, database_url):
    world = await build_world(pg)
    job_id = await enqueue(app, "test.permanent", world.acme[0])
    async with worker(app, database_url):
        await wait_status(pg, job_id, "failed")
    job = (await client.get(f"/v1/admin/jobs/{job_id}", headers=world.callers["root"])).json()
    assert job["attempts"] == 1
    assert job["last_error"] == "PermanentFailure: the address is refused for good"
    assert await pg.fetchval("SELECT count(*) FROM test_job_runs WHERE job_id = $1", job_id) == 1


async def test_admin_job_routes_keep_to_the_callers_app(app, pg, client):
    world: World = await build_world(pg)
    job_id = await enqueue(app, "test.record", world.acme[0])
    path = f"/v1/admin/jobs/{job_id}"
    other = world.callers["other_admin"]
    assert (await client.get(path, headers=other)).status_code == 404
    assert (await client.post(f"{path}/retry", headers=other)).status_code == 404
    assert (await client.get("/v1/admin/jobs", headers=other)).json()["jobs"] == []
    foreign = await client.get("/v1/admin/jobs", params={"app_id": world.acme[0]}, headers=other)
    assert foreign.status_code == 404
    for path_ in ("/v1/admin/jobs", path):
        assert (await client.get(path_, headers=world.callers["user"])).status_code == 403
        assert (await client.get(path_)).status_code == 401
    # The default app's admins reach every app; the app's own API keys may look too.
    root = await client.get(
        "/v1/admin/jobs", params={"app_id": "acme"}, headers=world.callers["root"]
    )
    assert [j["id"] for j in root.json()["jobs"]] == [job_id, world.failed_job]
    assert (await client.get(path, headers=world.callers["api_key"])).status_code == 200
    # A job not failed cannot be retried; an unknown one is 404, a malformed id 422.
    queued = await client.post(f"{path}/retry", headers=world.callers["api_key"])
    assert queued.status_code == 409
    assert (
        await client.get("/v1/admin/jobs/999999999", headers=world.callers["root"])
    ).status_code == 404
    assert (
        await client.get("/v1/admin/jobs/abc", headers=world.callers["root"])
    ).status_code == 422
    assert (
        await client.get("/v1/admin/jobs", params={"status": "lost"}, headers=world.callers["root"])
    ).status_code == 422


async def test_job_list_pages_with_a_cursor(app, pg, client):
    world = await build_world(pg)
    ids = [await enqueue(app, "test.record", world.acme[0], n=i) for i in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "kind": "test.record"}
        if cursor:
            params["cursor"] = cursor
        page = (
            await client.get("/v1/admin/jobs", params=params, headers=world.callers["admin"])
        ).json()
        seen += [j["id"] for j in page["jobs"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == sorted([*ids, world.failed_job], reverse=True)


async def test_a_worker_survives_losing_its_connection(app, pg, runs, database_url, monkeypatch):
    monkeypatch.setattr(jobs, "RESTART_DELAY", 0.1)
    world = await build_world(pg)
    async with worker(app, database_url) as loop:
        await wait_status(pg, await enqueue(app, "test.record", world.acme[0]), "succeeded")
        # As a database restart or a cut connection would leave it.
        await pg.execute("SELECT pg_terminate_backend($1)", loop.backend_pid)
        await wait_status(pg, await enqueue(app, "test.record", world.acme[0]), "succeeded")


# ---- worker processes ----------------------------------------------------------------------


@contextmanager
def worker_process(database_url: str, **extra: str) -> Iterator[subprocess.Popen[str]]:
    """`python -m app worker` with the tests' kinds; killed on the way out."""
    env = process_env(
        DATABASE_URL=database_url,
        JOBS_MODULES="tests.job_kinds",
        JOBS_HEARTBEAT_TIMEOUT="1",
        JOBS_POLL_INTERVAL="0.2",
        JOBS_CONCURRENCY="4",
        **extra,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def wait_started(process: subprocess.Popen[str], seconds: float = 60) -> None:
    """Until the worker logs that it takes jobs."""
    assert process.stderr is not None
    deadline = time.monotonic() + seconds
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if "job worker started" in line:
            return
        assert line or process.poll() is None, "".join(lines)
    raise AssertionError("worker did not start\n" + "".join(lines))


async def test_a_job_whose_worker_was_killed_runs_again(app, pg, runs, database_url):
    world = await build_world(pg)
    job_id = await enqueue(app, "test.block", world.acme[0])
    with worker_process(database_url) as first:
        wait_started(first)
        deadline = time.monotonic() + 30
        while not await pg.fetchval("SELECT count(*) FROM test_job_runs WHERE job_id = $1", job_id):
            assert time.monotonic() < deadline, "the job never started"
            await asyncio.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert await pg.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "running"
    with worker_process(database_url) as second:
        wait_started(second)
        await wait_status(pg, job_id, "succeeded")
    rows = await pg.fetch("SELECT worker, ended_at FROM test_job_runs WHERE job_id = $1", job_id)
    assert len(rows) == 2  # the killed run, and exactly one more
    assert [row["worker"] for row in rows if row["ended_at"] is not None] == [second.pid]
    assert await pg.fetchval("SELECT attempts FROM jobs WHERE id = $1", job_id) == 2


async def test_two_workers_never_run_one_job_at_once(app, pg, runs, database_url):
    world = await build_world(pg)
    with worker_process(database_url) as one, worker_process(database_url) as two:
        wait_started(one)
        wait_started(two)
        ids = []
        async with app.state.sessions() as db, db.begin():
            for n in range(24):
                ids.append(
                    await jobs.enqueue(
                        db, "test.record", {"n": n, "seconds": 0.1}, app_id=world.acme[0]
                    )
                )
        for job_id in ids:
            await wait_status(pg, job_id, "succeeded")
        one.send_signal(signal.SIGTERM)
        two.send_signal(signal.SIGTERM)
        assert one.wait(timeout=30) == 0 and two.wait(timeout=30) == 0
    rows = await pg.fetch("SELECT job_id, worker, started_at, ended_at FROM test_job_runs")
    by_job: dict[int, list[Any]] = {}
    for row in rows:
        by_job.setdefault(row["job_id"], []).append(row)
    # Each job ran once, to its end: no second worker ever started it, overlapping or not.
    assert sorted(by_job) == sorted(ids)
    assert all(len(runs_) == 1 and runs_[0]["ended_at"] is not None for runs_ in by_job.values())
    # Both took jobs: the exclusion was tested under real contention.
    assert {row["worker"] for row in rows} == {one.pid, two.pid}


async def test_serve_runs_jobs_by_default(app, pg, runs, database_url):
    """JOBS_IN_SERVE defaults to true: `python -m app serve`, with two WORKERS, runs jobs."""
    world = await build_world(pg)
    env = process_env(
        DATABASE_URL=database_url, JOBS_MODULES="tests.job_kinds", WORKERS="2", LOG_LEVEL="warning"
    )
    del env["JOBS_IN_SERVE"]  # the default
    with serving(env, free_port()):
        job_id = await enqueue(app, "test.record", world.acme[0])
        await wait_status(pg, job_id, "succeeded")


async def test_the_installed_queue_schema_is_what_pgqueuer_declares(pg):
    """Migration 0009 writes pgqueuer's schema out; after a library upgrade this fails until a
    migration brings the schema to the new declaration."""
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    plan = await Queries(AsyncpgDriver(pg)).plan_upgrade()
    assert list(plan.statements) == []
