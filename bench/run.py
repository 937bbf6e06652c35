"""`make bench`: Userkeep's hot routes under load, next to the references that say what is good.

    make bench                                  # or: .venv/bin/python -m bench.run
    BENCH_USERS=2000 BENCH_DURATION=3 BENCH_HASH_SECONDS=2 make bench    # a smoke run

On the bench database (embedded PostgreSQL under .data/bench, or BENCH_DATABASE_URL), with
users seeded by bench.seed_users and sessions by bench.fixtures, one server at a time:

1. the password-hash ceiling: argon2id hashes/s with Userkeep's CryptContext, all cores;
2. Userkeep (`python -m app serve`, WORKERS workers, RATE_LIMITS=off since all load comes from
   one address, JOBS_IN_SERVE=false so no job worker takes CPU from the requests): GET
   /v1/auth/me, POST /v1/auth/token and POST /v1/auth/introspect (the same session lookup as
   /me; compared to it), POST /v1/auth/forgot-password (its cost is compared to /me's; the mail
   jobs it queues are purged after the row), POST /v1/auth/signin and POST /v1/auth/signup
   (hash-bound: compared to the hash ceiling; sign-up's users, mail jobs and audit rows are
   removed after its row), POST /v1/auth/refresh (no hash: compared to /me; each request uses
   a refresh token of its own, seeded for the run and removed after it), GET
   /v1/admin/users?search=…, the Faroe get_user and get_user_by_email_address actions (signed
   with FAROE_SECRET); then the resident memory of each uvicorn worker;
3. the ceiling for /me: bench/ref_minimal.py (FastAPI + raw asyncpg, same lookup);
4. the common alternative: bench/ref_fastapi_users.py (fastapi-users, DatabaseStrategy).

Load comes from a separate process (bench.loadgen: wrk when installed, else asyncio), with a
fixed number of keep-alive connections for a fixed time after a warm-up. Prints one table and
writes it to bench/results/latest.md.

Knobs (environment): BENCH_USERS (100000; a bigger seeded set, e.g. the 1M of
`python -m bench.seed_users`, is used as it is), BENCH_SESSIONS (= BENCH_USERS), BENCH_TOKENS
(distinct tokens/users the load cycles through, 10000), BENCH_SIGNIN_USERS (1000),
BENCH_FORGOT_ADDRESSES (addresses forgot-password cycles through, 10000: half of live users,
half unknown), WORKERS (2),
BENCH_CONNECTIONS (16), BENCH_DURATION (15 s), BENCH_WARMUP (3 s), BENCH_HASH_SECONDS (10),
BENCH_TOOL (auto|wrk|python), BENCH_ONLY (comma list of rows: hash, me, token, introspect,
forgot, signin, signup, refresh, search, faroe, faroe-email, minimal, fastapi-users),
BENCH_DATABASE_URL (an external server instead of the embedded one). The mail queue has a
bench of its own: `make bench-mail` (bench/mail_queue.py); so do webhooks (latency,
throughput, fan-out; minutes): `make bench-webhooks` (bench/webhooks.py); the JWT verifier's
cost per request, `python -m bench.jwt_verify`; and the server CPU per request by route on one
worker, the comparison that holds on a shared machine, `python -m bench.route_cpu`.
"""

import asyncio
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx

from app import db as database
from app.faroe.client import ENDPOINT as FAROE_ENDPOINT
from app.faroe.client import encode_request, sign
from bench import fixtures, hash_ceiling, loadgen, seed_users
from bench.admin_search import admin_token
from bench.common import (
    ROOT,
    bench_db,
    free_port,
    postmaster_pid,
    purge_queued_jobs,
    start_server,
)

FAROE_SECRET = "userkeep-bench-faroe-secret-0123456789"  # at least 32 bytes, as required
# The endpoint serves each (timestamp, signature) once, and the load generator cycles through its
# list: there must be a distinct signed request for every request of the run at this rate (a
# list that wraps shows up as 401 errors in the row).
FAROE_MAX_RPS = 4000
# The same for refresh tokens (good once: a second use revokes the family) and sign-up
# addresses (taken once: a second sign-up is a 409).
REFRESH_MAX_RPS = 2000
SIGNUP_MAX_RPS = 400
FASTAPI_USERS_PYTHON = ROOT / ".data" / "bench" / "fastapi-users-venv" / "bin" / "python"
RESULTS = ROOT / "bench" / "results" / "latest.md"
SEARCHES = [
    "lovelace12",
    "grace hopper",
    "torvalds99",
    "rossum42",
    "hopper7@example",
    "linus.turing1",
]
ROWS = [
    "hash",
    "me",
    "token",
    "introspect",
    "forgot",
    "signin",
    "signup",
    "refresh",
    "search",
    "faroe",
    "faroe-email",
    "minimal",
    "fastapi-users",
]
# The bar for the token and introspection rows: one indexed read like /me.
TOKEN_MIN_RATIO = 0.8
# Issue 17's bar: sign-in at 0.75x the argon2id hashes/s of the same run (the rest of a
# sign-in is ~3 ms of a ~30 ms request).
SIGNIN_MIN_RATIO = 0.75
# The bar: a forgot-password request costs at most twice a GET /me.
FORGOT_MAX_COST = 2.0
KNOBS = [
    "BENCH_USERS",
    "BENCH_SESSIONS",
    "BENCH_TOKENS",
    "BENCH_SIGNIN_USERS",
    "BENCH_FORGOT_ADDRESSES",
    "WORKERS",
    "BENCH_CONNECTIONS",
    "BENCH_DURATION",
    "BENCH_WARMUP",
    "BENCH_HASH_SECONDS",
    "BENCH_TOOL",
    "BENCH_ONLY",
]


def knob(name: str, default: int | float) -> int | float:
    value = os.environ.get(name)
    return type(default)(value) if value else default


class Config:
    def __init__(self) -> None:
        self.users = int(knob("BENCH_USERS", 100_000))
        self.sessions = int(knob("BENCH_SESSIONS", self.users))
        self.tokens = int(knob("BENCH_TOKENS", 10_000))
        self.signin_users = int(knob("BENCH_SIGNIN_USERS", 1000))
        self.forgot_addresses = int(knob("BENCH_FORGOT_ADDRESSES", 10_000))
        self.workers = int(knob("WORKERS", 2))
        self.connections = int(knob("BENCH_CONNECTIONS", 16))
        self.duration = float(knob("BENCH_DURATION", 15.0))
        self.warmup = float(knob("BENCH_WARMUP", 3.0))
        self.hash_seconds = float(knob("BENCH_HASH_SECONDS", 10.0))
        self.tool = os.environ.get("BENCH_TOOL", "auto")
        self.db_url = ""  # set once the bench database is up
        only = os.environ.get("BENCH_ONLY", "")
        self.rows = [r.strip() for r in only.split(",") if r.strip()] or ROWS
        unknown = set(self.rows) - set(ROWS)
        if unknown:
            sys.exit(f"BENCH_ONLY: unknown rows {sorted(unknown)}; known: {', '.join(ROWS)}")
        if self.warmup + self.duration > 280:
            # Faroe requests are signed before the run, and a signature is good for 300 s.
            sys.exit("BENCH_WARMUP + BENCH_DURATION must stay under 280 s")


# ---- raw requests --------------------------------------------------------------------------


def raw_request(
    method: str, url: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> str:
    host = urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: userkeep-bench"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines) + "\r\n\r\n" + body.decode("latin-1")


async def settle(db_url: str) -> None:
    """A checkpoint before each row, so the writes of the previous row (sign-ins, seeding) are
    flushed now and not by a checkpoint in the middle of the next measurement."""
    conn = await _connect(db_url)
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass  # an external server as a non-superuser: measure without it
    finally:
        await conn.close()


def drive(
    cfg: Config,
    url: str,
    requests: list[str],
    expect: tuple[int, ...] = (200,),
    watch: dict[str, int | None] | None = None,
    warmup_requests: list[str] | None = None,
) -> dict:
    """Run bench.loadgen in its own process against `url` and return its result. `watch`
    names processes (the server, PostgreSQL) whose CPU during the measured run is returned
    per request, in ms, as `cpu_ms`."""
    if cfg.db_url:
        asyncio.run(settle(cfg.db_url))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(
            {
                "url": url,
                "expect": list(expect),
                "requests": requests,
                "warmup_requests": warmup_requests or [],
            },
            spec,
        )
    try:
        output = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                spec.name,
                "--connections",
                str(cfg.connections),
                "--duration",
                str(cfg.duration),
                "--warmup",
                str(cfg.warmup),
                "--tool",
                cfg.tool,
                *(f"--watch={pid}" for pid in (watch or {}).values() if pid),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(spec.name)
    result: dict = json.loads(output.stdout.strip().splitlines()[-1])
    spent = result.get("cpu", {})
    result["cpu_ms"] = {
        name: 1000 * spent[str(pid)] / result["requests"]
        for name, pid in (watch or {}).items()
        if str(pid) in spent and result["requests"]
    }
    kinds = {k: v for k, v in result.get("error_kinds", {}).items() if v}
    print(
        f"    {result['rps']:.0f} req/s, p50 {result['p50'] or 0:.1f} ms, "
        f"p99 {result['p99'] or 0:.1f} ms, {result['errors']} errors {kinds or ''}"
        + "".join(f", {name} CPU {ms:.2f} ms/req" for name, ms in result["cpu_ms"].items()),
        flush=True,
    )
    return result


def check(url: str, request_line: tuple[str, str], expect: int, **kwargs) -> None:
    """One request before the load: a wrong token or setup fails loudly, not as 100% errors."""
    method, path = request_line
    response = httpx.request(method, url + path, timeout=30, **kwargs)
    if response.status_code != expect:
        raise RuntimeError(
            f"{method} {path}: expected {expect}, got {response.status_code}: {response.text}"
        )


# ---- servers -------------------------------------------------------------------------------


def start_reference(python: Path | str, module: str, db_url: str, workers: int, probe: str):
    port = free_port()
    env = {**os.environ, "BENCH_DATABASE_URL": db_url}
    server = subprocess.Popen(  # noqa: S603
        [
            str(python),
            "-m",
            "uvicorn",
            f"{module}:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            # Like for like: `python -m app serve` runs without uvicorn's proxy headers.
            "--no-proxy-headers",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{module} exited with {server.returncode}")
        try:
            httpx.get(base + probe, timeout=1)
            time.sleep(1)  # every worker up, not just the first
            return server, base
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"{module} did not start")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# ---- the run -------------------------------------------------------------------------------


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**database._asyncpg_args(url))


async def prepare(cfg: Config, url: str) -> dict:
    await seed_users.seed(url, cfg.users)
    conn = await _connect(url)
    try:
        facts: dict = {
            "users": await conn.fetchval("SELECT count(*) FROM users"),
            "postgres": await conn.fetchval("SHOW server_version"),
            # For the CPU per request of a row, when PostgreSQL runs on this machine.
            "postmaster": await postmaster_pid(url),
        }
        facts["sessions"] = await fixtures.seed_sessions(conn, cfg.sessions)
        rng = random.Random(6)
        facts["token_indexes"] = rng.sample(range(cfg.sessions), min(cfg.tokens, cfg.sessions))
        if "signin" in cfg.rows:
            facts["signin_emails"] = await fixtures.seed_signin_users(conn, cfg.signin_users)
        if "faroe" in cfg.rows:
            facts["faroe_ids"] = await fixtures.sample_user_ids(conn, cfg.tokens)
        if "faroe-email" in cfg.rows:
            facts["faroe_emails"] = await fixtures.sample_emails(conn, cfg.tokens)
        if "introspect" in cfg.rows:
            facts["api_key"] = await fixtures.seed_api_key(conn)
        if "forgot" in cfg.rows:
            facts["forgot_emails"] = await fixtures.forgot_addresses(conn, cfg.forgot_addresses)
    finally:
        await conn.close()
    if "search" in cfg.rows:
        facts["admin_token"] = await admin_token(url)
    return facts


async def freshen(url: str, indexes: list[int], fastapi_users: bool = False) -> None:
    conn = await _connect(url)
    try:
        if fastapi_users:
            await fixtures.freshen_fastapi_users(conn, indexes)
        else:
            await fixtures.freshen_sessions(conn, indexes)
    finally:
        await conn.close()


def bench_userkeep(cfg: Config, url: str, facts: dict, results: dict) -> None:
    server, base = start_server(
        url, cfg.workers, RATE_LIMITS="off", FAROE_SECRET=FAROE_SECRET, FAROE_AUTH="hmac"
    )
    # The server (its supervisor and uvicorn workers) and PostgreSQL: what a request costs.
    watch = {"app": server.pid, "postgres": facts["postmaster"]}
    try:
        if "me" in cfg.rows:
            print("  GET /v1/auth/me", flush=True)
            indexes = facts["token_indexes"]
            asyncio.run(freshen(url, indexes))
            tokens = [fixtures.session_token(i) for i in indexes]
            check(
                base,
                ("GET", "/v1/auth/me"),
                200,
                headers={"Authorization": f"Bearer {tokens[0]}"},
            )
            results["me"] = drive(
                cfg,
                base,
                [
                    raw_request("GET", base, "/v1/auth/me", {"Authorization": f"Bearer {t}"})
                    for t in tokens
                ],
                watch=watch,
            )
        if "token" in cfg.rows:
            print("  POST /v1/auth/token", flush=True)
            tokens = [fixtures.session_token(i) for i in facts["token_indexes"]]
            bearer = {"Authorization": f"Bearer {tokens[0]}"}
            # Also makes the first signing key, outside the measurement.
            check(base, ("POST", "/v1/auth/token"), 200, headers=bearer)
            results["token"] = drive(
                cfg,
                base,
                [
                    raw_request("POST", base, "/v1/auth/token", {"Authorization": f"Bearer {t}"})
                    for t in tokens
                ],
                watch=watch,
            )
        if "introspect" in cfg.rows:
            print("  POST /v1/auth/introspect", flush=True)
            tokens = [fixtures.session_token(i) for i in facts["token_indexes"]]
            headers = {
                "Authorization": f"Bearer {facts['api_key']}",
                "Content-Type": "application/json",
            }
            bodies = [json.dumps({"token": t}).encode() for t in tokens]
            check(base, ("POST", "/v1/auth/introspect"), 200, headers=headers, content=bodies[0])
            results["introspect"] = drive(
                cfg,
                base,
                [raw_request("POST", base, "/v1/auth/introspect", headers, b) for b in bodies],
                watch=watch,
            )
        if "forgot" in cfg.rows:
            print("  POST /v1/auth/forgot-password", flush=True)
            bodies = [json.dumps({"email": e}).encode() for e in facts["forgot_emails"]]
            json_type = {"Content-Type": "application/json"}
            check(
                base,
                ("POST", "/v1/auth/forgot-password"),
                200,
                content=bodies[0],
                headers=json_type,
            )
            try:
                results["forgot"] = drive(
                    cfg,
                    base,
                    [
                        raw_request("POST", base, "/v1/auth/forgot-password", json_type, b)
                        for b in bodies
                    ],
                    watch=watch,
                )
            finally:
                # No worker ran: every request left a queued mail job, which no later server
                # or worker may send.
                purged = asyncio.run(purge_queued_jobs(url))
                print(f"    {purged:,} queued mail jobs purged", flush=True)
            results["forgot"]["purged"] = purged
        if "signin" in cfg.rows:
            print("  POST /v1/auth/signin", flush=True)
            bodies = [
                json.dumps({"email": e, "password": fixtures.SIGNIN_PASSWORD}).encode()
                for e in facts["signin_emails"]
            ]
            check(
                base,
                ("POST", "/v1/auth/signin"),
                200,
                content=bodies[0],
                headers={"Content-Type": "application/json"},
            )
            results["signin"] = drive(
                cfg,
                base,
                [
                    raw_request(
                        "POST", base, "/v1/auth/signin", {"Content-Type": "application/json"}, b
                    )
                    for b in bodies
                ],
            )
        if "signup" in cfg.rows:
            print("  POST /v1/auth/signup", flush=True)
            results["signup"] = bench_signup(cfg, url, base)
        if "refresh" in cfg.rows:
            print("  POST /v1/auth/refresh", flush=True)
            results["refresh"] = bench_refresh(cfg, url, base, watch)
        if "search" in cfg.rows:
            print("  GET /v1/admin/users?search=…", flush=True)
            auth = {"Authorization": f"Bearer {facts['admin_token']}"}
            paths = ["/v1/admin/users?" + urlencode({"search": s, "limit": 20}) for s in SEARCHES]
            check(base, ("GET", paths[0]), 200, headers=auth)
            results["search"] = drive(cfg, base, [raw_request("GET", base, p, auth) for p in paths])
        if "faroe" in cfg.rows:
            print("  Faroe get_user", flush=True)
            bodies = [encode_request("get_user", {"user_id": i}) for i in facts["faroe_ids"]]
            results["faroe"] = drive_faroe(cfg, base, bodies)
        if "faroe-email" in cfg.rows:
            print("  Faroe get_user_by_email_address", flush=True)
            action = "get_user_by_email_address"
            bodies = [encode_request(action, {"email_address": e}) for e in facts["faroe_emails"]]
            results["faroe-email"] = drive_faroe(cfg, base, bodies)
        results["rss_mb"] = worker_rss_mb(server.pid)
    finally:
        stop(server)


def worker_rss_mb(server_pid: int) -> list[float]:
    """Resident memory (MB) of each uvicorn worker of the server, after its rows: the processes
    multiprocessing spawned (not its resource tracker), or the server itself with one worker."""
    import psutil

    try:
        server = psutil.Process(server_pid)
        workers = [
            p
            for p in server.children(recursive=True)
            if any("spawn_main" in part for part in p.cmdline())
        ] or [server]
        return [w.memory_info().rss / 2**20 for w in workers]
    except psutil.Error:
        return []


def _run_nonce() -> str:
    """Sets this run's sign-up addresses and refresh tokens apart from every other run's."""
    return f"{int(time.time()):x}{random.randrange(16**4):04x}"


def _needed(cfg: Config, max_rps: int) -> int:
    """How many one-use requests a row at up to `max_rps` can use in its measured run (and
    its warm-up, which the Python generator takes from the same list)."""
    return math.ceil(max_rps * (cfg.warmup + cfg.duration + loadgen.DRAIN + 2))


def bench_signup(cfg: Config, url: str, base: str) -> dict:
    """Sign-ups with addresses no run uses twice (a wrk list that wraps shows up as 409
    errors); the users, their audit rows and the verification mails queued are removed after."""
    nonce = _run_nonce()
    json_type = {"Content-Type": "application/json"}

    def requests(first: int, count: int) -> list[str]:
        return [
            raw_request(
                "POST",
                base,
                "/v1/auth/signup",
                json_type,
                json.dumps(
                    {
                        "email": fixtures.SIGNUP_EMAIL.format(nonce, i),
                        "password": fixtures.SIGNUP_PASSWORD,
                    }
                ).encode(),
            )
            for i in range(first, first + count)
        ]

    warm_count = math.ceil(SIGNUP_MAX_RPS * cfg.warmup) + 1
    warm = requests(1, warm_count)
    body = {"email": fixtures.SIGNUP_EMAIL.format(nonce, 0), "password": fixtures.SIGNUP_PASSWORD}
    check(base, ("POST", "/v1/auth/signup"), 201, json=body)
    try:
        result = drive(
            cfg,
            base,
            requests(1 + warm_count, _needed(cfg, SIGNUP_MAX_RPS)),
            expect=(201,),
            warmup_requests=warm,
        )
    finally:

        async def clean() -> int:
            conn = await _connect(url)
            try:
                return await fixtures.forget_signups(conn, nonce)
            finally:
                await conn.close()

        removed = asyncio.run(clean())
        purged = asyncio.run(purge_queued_jobs(url))
        print(f"    {removed:,} signed-up users removed, {purged:,} queued mail jobs purged")
    return result


def bench_refresh(cfg: Config, url: str, base: str, watch: dict[str, int | None]) -> dict:
    """Each request trades in a refresh token of its own, seeded for this run (a token is good
    once); the sessions seeded and issued are removed after."""
    nonce = _run_nonce()
    warm_count = math.ceil(REFRESH_MAX_RPS * cfg.warmup) + 1
    count = 1 + warm_count + _needed(cfg, REFRESH_MAX_RPS)

    async def seed() -> list[str]:
        conn = await _connect(url)
        try:
            return await fixtures.seed_refresh_sessions(conn, nonce, count)
        finally:
            await conn.close()

    tokens = asyncio.run(seed())
    json_type = {"Content-Type": "application/json"}

    def requests(chosen: list[str]) -> list[str]:
        return [
            raw_request(
                "POST",
                base,
                "/v1/auth/refresh",
                json_type,
                json.dumps({"refresh_token": t}).encode(),
            )
            for t in chosen
        ]

    try:
        check(base, ("POST", "/v1/auth/refresh"), 200, json={"refresh_token": tokens[0]})
        result = drive(
            cfg,
            base,
            requests(tokens[1 + warm_count :]),
            watch=watch,
            warmup_requests=requests(tokens[1 : 1 + warm_count]),
        )
    finally:

        async def clean() -> int:
            conn = await _connect(url)
            try:
                return await fixtures.forget_refresh_sessions(conn, nonce)
            finally:
                await conn.close()

        print(f"    {asyncio.run(clean()):,} refresh-row sessions removed", flush=True)
    return result


def drive_faroe(cfg: Config, base: str, bodies: list[bytes]) -> dict:
    """The Faroe calls `bodies`, each signed and served once, under load."""
    signed = faroe_requests(cfg, bodies)
    # Signed a second before the list's first timestamp, so it uses up none of them.
    earlier = sign(FAROE_SECRET, bodies[0], int(time.time()) - 1)
    check(base, ("POST", FAROE_ENDPOINT), 200, content=bodies[0], headers=earlier)
    # wrk's warm-up gets requests of its own (a nonce sets them apart): a signature is served
    # once, and the measured run starts its list from the beginning.
    warm = faroe_requests(cfg, bodies, nonce="bench-warm-up-requests")
    return drive(
        cfg,
        base,
        [raw_request("POST", base, FAROE_ENDPOINT, h, b) for h, b in signed],
        warmup_requests=[raw_request("POST", base, FAROE_ENDPOINT, h, b) for h, b in warm],
    )


def faroe_requests(
    cfg: Config, bodies: list[bytes], nonce: str | None = None
) -> list[tuple[dict[str, str], bytes]]:
    """Every body, signed at as many timestamps as FAROE_MAX_RPS needs for the whole run. The
    timestamps are now and the seconds after it: the endpoint accepts up to 300 s ahead, and
    the run is shorter than 280 s (Config checks), so all stay inside the window."""
    seconds = cfg.warmup + loadgen.DRAIN + cfg.duration + 2
    stamps = min(250, math.ceil(FAROE_MAX_RPS * seconds / len(bodies)))
    now = int(time.time())
    signed = []
    for stamp in range(now, now + stamps):
        for body in bodies:
            signature = sign(FAROE_SECRET, body, stamp, nonce)
            headers = {"Content-Type": "application/json", **signature}
            signed.append((headers, body))
    return signed


def bench_minimal(cfg: Config, url: str, facts: dict, results: dict) -> None:
    print("  reference: minimal FastAPI + asyncpg GET /me", flush=True)
    indexes = facts["token_indexes"]
    asyncio.run(freshen(url, indexes))
    server, base = start_reference(sys.executable, "bench.ref_minimal", url, cfg.workers, "/me")
    try:
        tokens = [fixtures.session_token(i) for i in indexes]
        check(base, ("GET", "/me"), 200, headers={"Authorization": f"Bearer {tokens[0]}"})
        results["minimal"] = drive(
            cfg,
            base,
            [raw_request("GET", base, "/me", {"Authorization": f"Bearer {t}"}) for t in tokens],
        )
    finally:
        stop(server)


def bench_fastapi_users(cfg: Config, url: str, facts: dict, results: dict) -> None:
    print("  reference: fastapi-users GET /users/me (DatabaseStrategy)", flush=True)
    if not FASTAPI_USERS_PYTHON.exists():
        print(f"    skipped: no {FASTAPI_USERS_PYTHON} (make bench installs it)")
        return
    subprocess.run(  # noqa: S603
        [str(FASTAPI_USERS_PYTHON), "-m", "bench.ref_fastapi_users", "setup"],
        cwd=ROOT,
        env={**os.environ, "BENCH_DATABASE_URL": url},
        check=True,
    )

    async def seed() -> None:
        conn = await _connect(url)
        try:
            await fixtures.seed_fastapi_users(conn, facts["users"], cfg.sessions)
            await fixtures.freshen_fastapi_users(conn, facts["token_indexes"])
        finally:
            await conn.close()

    asyncio.run(seed())
    server, base = start_reference(
        FASTAPI_USERS_PYTHON, "bench.ref_fastapi_users", url, cfg.workers, "/users/me"
    )
    try:
        tokens = [fixtures.fastapi_users_token(i) for i in facts["token_indexes"]]
        check(base, ("GET", "/users/me"), 200, headers={"Authorization": f"Bearer {tokens[0]}"})
        results["fastapi-users"] = drive(
            cfg,
            base,
            [
                raw_request("GET", base, "/users/me", {"Authorization": f"Bearer {t}"})
                for t in tokens
            ],
        )
    finally:
        stop(server)


# ---- the table -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command() -> str:
    knobs = " ".join(f"{k}={os.environ[k]}" for k in KNOBS if os.environ.get(k))
    runner = "make bench" if os.environ.get("MAKELEVEL") else ".venv/bin/python -m bench.run"
    return f"{knobs} {runner}".strip()


def ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or not b["rps"]:
        return None
    return float(a["rps"] / b["rps"])


def render(cfg: Config, facts: dict, results: dict, load: tuple[float, float, float]) -> str:
    tool = next((r["tool"] for r in results.values() if "tool" in r), "-")
    minimal = ratio(results.get("me"), results.get("minimal"))
    # Cost per request at saturation is the inverse of throughput: a forgot-password request
    # costs (me req/s) / (forgot req/s) GET /me requests.
    forgot_cost = ratio(results.get("me"), results.get("forgot"))
    # The same cost measured as CPU: what the server and PostgreSQL spent per request during
    # the run. Other load on a shared machine moves req/s far more than it moves this.
    forgot_cpu = None
    if results.get("me") and results.get("forgot"):
        me_ms, forgot_ms = cpu_per_request(results["me"]), cpu_per_request(results["forgot"])
        if me_ms and forgot_ms:
            forgot_cpu = forgot_ms / me_ms
    fastapi_users = ratio(results.get("me"), results.get("fastapi-users"))
    hashes = results.get("hash")
    signin = (
        results["signin"]["rps"] / hashes["hashes_per_second"]
        if results.get("signin") and hashes
        else None
    )
    signup = (
        results["signup"]["rps"] / hashes["hashes_per_second"]
        if results.get("signup") and hashes
        else None
    )
    refresh_share = ratio(results.get("refresh"), results.get("me"))
    lines = [
        f"## Userkeep bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, PostgreSQL "
        f"{facts['postgres']} (same machine); load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- command: `{command()}`",
        f"- data: {facts['users']:,} users, {facts['sessions']:,} sessions; the load cycles "
        f"through {len(facts['token_indexes']):,} tokens/users, "
        f"{len(facts.get('forgot_emails', [])):,} addresses for forgot-password (half known), "
        f"{cfg.signin_users:,} accounts for sign-in, {len(SEARCHES)} searches",
        f"- load: {tool}, {cfg.connections} keep-alive connections, {cfg.duration:g} s per row "
        f"after {cfg.warmup:g} s warm-up; servers: {cfg.workers} uvicorn workers each, one "
        "server at a time, RATE_LIMITS=off; Userkeep with JOBS_IN_SERVE=false",
        "",
        "| row | req/s | p50 ms | p99 ms | errors | ratio |",
        "|---|---:|---:|---:|---:|---|",
    ]

    def row(label: str, key: str, note: str = "") -> None:
        r = results.get(key)
        if r is None:
            if key in cfg.rows:
                lines.append(f"| {label} | - | - | - | - | not run |")
            return
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {r['p50'] or 0:.1f} | {r['p99'] or 0:.1f} | "
            f"{r['errors']:,} of {r['requests']:,} | {note} |"
        )

    me_note = ", ".join(
        f"{value:.2f}x {name}"
        for name, value in (("minimal", minimal), ("fastapi-users", fastapi_users))
        if value is not None
    )
    row("GET /v1/auth/me", "me", me_note)
    for key, label in (
        ("token", "POST /v1/auth/token"),
        ("introspect", "POST /v1/auth/introspect"),
    ):
        share = ratio(results.get(key), results.get("me"))
        row(label, key, f"{share:.2f}x /me" if share is not None else "")
    forgot = results.get("forgot")
    forgot_note = ""
    if forgot_cost is not None:
        forgot_note = f"{forgot_cost:.2f}x the cost of /me by req/s"
    if forgot_cpu is not None:
        me_ms, forgot_ms = cpu_per_request(results["me"]), cpu_per_request(results["forgot"])
        forgot_note += (
            f", {forgot_cpu:.2f}x by CPU per request (server + PostgreSQL {forgot_ms:.2f} ms, "
            f"/me {me_ms:.2f} ms)"
        )
    if forgot:
        forgot_note += (
            f"; no job worker (JOBS_IN_SERVE=false), {forgot['purged']:,} queued mail jobs purged"
        )
    row("POST /v1/auth/forgot-password", "forgot", forgot_note)
    row(
        "POST /v1/auth/signin",
        "signin",
        f"{signin:.2f}x hash ceiling" if signin is not None else "",
    )
    row(
        "POST /v1/auth/signup",
        "signup",
        f"{signup:.2f}x hash ceiling" if signup is not None else "",
    )
    refresh_note = ""
    if refresh_share is not None:
        # No hash in a refresh: its reference is /me (one indexed read), by req/s.
        refresh_note = f"{refresh_share:.2f}x /me by req/s (no hash: compared to /me)"
        me_ms = cpu_per_request(results["me"])
        refresh_ms = cpu_per_request(results["refresh"])
        if me_ms and refresh_ms:
            refresh_note += (
                f", {refresh_ms / me_ms:.2f}x its cost by CPU per request (server + PostgreSQL "
                f"{refresh_ms:.2f} ms, /me {me_ms:.2f} ms)"
            )
    row("POST /v1/auth/refresh", "refresh", refresh_note)
    row("GET /v1/admin/users?search=…", "search")
    faroe_share = ratio(results.get("faroe"), results.get("me"))
    row("Faroe get_user (signed)", "faroe", f"{faroe_share:.2f}x /me" if faroe_share else "")
    by_email = ratio(results.get("faroe-email"), results.get("me"))
    row(
        "Faroe get_user_by_email_address (signed)",
        "faroe-email",
        f"{by_email:.2f}x /me" if by_email else "",
    )
    row("ref: minimal FastAPI + asyncpg, GET /me", "minimal", "the ceiling for /me")
    row("ref: fastapi-users DatabaseStrategy, GET /users/me", "fastapi-users")
    if hashes:
        lines.append(
            f"| ref: argon2id {hash_ceiling.parameters()} hashes/s, {hashes['processes']} "
            "processes | "
            f"{hashes['hashes_per_second']:,.1f} | - | - | - | the ceiling for sign-in |"
        )
    rss = results.get("rss_mb")
    if rss:
        lines += [
            "",
            f"Worker RSS after the Userkeep rows: {', '.join(f'{mb:.0f}' for mb in rss)} MB "
            f"({len(rss)} uvicorn workers, {sum(rss) / len(rss):.0f} MB per worker on average).",
        ]
    targets = []
    me = results.get("me")
    if minimal is not None:
        targets.append(f"/me ≥ 0.8x minimal: {_verdict(minimal >= 0.8)} ({_shown(minimal)}x)")
    if fastapi_users is not None:
        targets.append(
            f"/me ≥ 1.5x fastapi-users: {_verdict(fastapi_users >= 1.5)} ({fastapi_users:.2f}x)"
        )
    if me and me["p99"] is not None:
        targets.append(f"/me p99 ≤ 50 ms: {_verdict(me['p99'] <= 50)} ({me['p99']:.1f} ms)")
    # Each is one indexed read like /me (Faroe's also a replay-guard write): ≥ 0.8x of it.
    for key in ("token", "introspect", "faroe", "faroe-email"):
        share = ratio(results.get(key), me)
        if share is not None:
            targets.append(
                f"{key} ≥ {TOKEN_MIN_RATIO:g}x /me: {_verdict(share >= TOKEN_MIN_RATIO)} "
                f"({_shown(share)}x)"
            )
    if forgot_cost is not None:
        by_cpu = ""
        if forgot_cpu is not None:
            by_cpu = f", by CPU {_verdict(forgot_cpu <= FORGOT_MAX_COST)} ({forgot_cpu:.2f}x)"
        targets.append(
            f"forgot-password ≤ {FORGOT_MAX_COST:g}x the cost of /me: by req/s "
            f"{_verdict(forgot_cost <= FORGOT_MAX_COST)} ({forgot_cost:.2f}x){by_cpu}"
        )
    if signin is not None:
        targets.append(
            f"sign-in ≥ {SIGNIN_MIN_RATIO:g}x hash ceiling: "
            f"{_verdict(signin >= SIGNIN_MIN_RATIO)} ({_shown(signin)}x)"
        )
    if targets and not tool.startswith("wrk"):
        # The Python generator shares the two cores with the servers it measures (/me read
        # 0.63x minimal with it and 0.90x with wrk an hour apart): no verdict from it.
        lines += ["", f"Targets: not judged (load from {tool}, not wrk: install wrk)."]
    elif targets:
        lines += ["", "Targets: " + "; ".join(targets) + "."]
    return "\n".join(lines) + "\n"


def _shown(ratio: float) -> str:
    """A ratio judged against a floor, to two decimals, cut rather than rounded: 0.795 is
    "0.79", not a "0.80" that reads as meeting a 0.8 bar it misses."""
    return f"{math.floor(ratio * 100) / 100:.2f}"


def cpu_per_request(result: dict) -> float | None:
    """ms of CPU the server and PostgreSQL spent per request of a row (None when unknown:
    psutil missing, or PostgreSQL on another machine)."""
    spent = result.get("cpu_ms", {})
    if "app" not in spent or "postgres" not in spent:
        return None
    return float(spent["app"] + spent["postgres"])


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    cfg = Config()
    load = os.getloadavg()
    results: dict = {}
    if "hash" in cfg.rows:
        print(f"password-hash ceiling ({cfg.hash_seconds:g} s)…", flush=True)
        results["hash"] = hash_ceiling.measure(cfg.hash_seconds)
        print(f"    {results['hash']['hashes_per_second']:.1f} hashes/s", flush=True)
    with bench_db(os.environ.get("BENCH_DATABASE_URL")) as url:
        cfg.db_url = url
        print("preparing the bench database…", flush=True)
        facts = asyncio.run(prepare(cfg, url))
        if set(cfg.rows) - {"hash", "minimal", "fastapi-users"}:
            print(f"Userkeep ({cfg.workers} workers)", flush=True)
            bench_userkeep(cfg, url, facts, results)
        if "minimal" in cfg.rows:
            bench_minimal(cfg, url, facts, results)
        if "fastapi-users" in cfg.rows:
            bench_fastapi_users(cfg, url, facts, results)
    table = render(cfg, facts, results, load)
    print("\n" + table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table, "utf-8")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    if shutil.which("wrk") is None and cfg.tool == "auto":
        print(
            "\n*** wrk was not found: the load came from the Python generator, which shares the "
            "cores with the servers, so every req/s above reads low and no target was judged. "
            "`make bench` installs wrk (tools/install_wrk.sh); run it as root, or install the "
            "Debian package wrk. ***",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
