"""Webhooks (Standard Webhooks): an app's endpoints, the events they subscribe to, and the jobs
that deliver them.

How an event leaves:
1. Raising. Every event of either door is an audit row (audit.record), written in the change's
   transaction; audit.py's flush hook hands the new rows to `raise_events`, which for each row
   whose action means a catalog event adds ONE `webhook.fanout` job, in one statement, and only
   when the app has an enabled endpoint subscribed to it (INSERT … SELECT … WHERE EXISTS). An
   app without webhooks pays that one statement per such event, and a rolled-back change
   rolls its job back with it.
2. Fan-out (worker). Loads the audit row and the user view once, builds the body, and adds one
   `webhook.deliver` job per subscribed enabled endpoint, in one transaction. It runs in the
   worker, not in the request, so the request's cost is one INSERT whatever the number of
   endpoints, and a slow listing never holds the change's transaction (and its row locks).
3. Delivery (worker, one job per event and endpoint). Signs and POSTs the body, records the
   attempt (webhook_deliveries), and retries on Standard Webhooks' schedule (about a day).
   `webhook-id` is the audit event's id: one change, one id, on every retry and every endpoint.
"""

import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import json
import logging
import secrets
import socket
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, bindparam, select
from sqlalchemy import insert as sql_insert
from sqlalchemy import update as sql_update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession
from standardwebhooks.webhooks import Webhook

from app import clock
from app.errors import Conflict, NotFound, ValidationFailed
from app.ids import Prefix, is_valid, new_id
from app.models import AuditEvent, User, WebhookDelivery, WebhookEndpoint
from app.security import secret_box, tls
from app.services import admin_auth, audit, cursors, jobs, users
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.settings import Settings

log = logging.getLogger("userkeep.webhooks")

FANOUT_JOB = "webhook.fanout"
DELIVER_JOB = "webhook.deliver"
TEST_EVENT = "webhook.test"
SECRET_PURPOSE = "webhook-secret"  # noqa: S105 - a key-derivation label, not a secret
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret
SECRET_BYTES = 32
# How long a rotated-out secret keeps signing, so receivers can switch without a gap.
ROTATION_OVERLAP = timedelta(hours=24)
# An endpoint failing without a single success for this long is disabled.
DISABLE_AFTER = timedelta(days=5)
TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 4096
MAX_ERROR_CHARS = 500
# Standard Webhooks' (Svix's) schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — about 28 h.
DELIVERY_RETRY = jobs.Retry.after(
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
# Fan-outs run at the default priority 0; deliveries go first (see `deliver`).
DELIVER_PRIORITY = 10
# A fan-out only reads and inserts: it fails only when the database does.
FANOUT_RETRY = jobs.Retry(max_attempts=10, first_delay=timedelta(seconds=5))


# ---- the catalog ---------------------------------------------------------------------------

_EXAMPLE_USER: dict[str, Any] = {
    "id": "ausr_01jhmms3m3ebsacsd61g9d528r",
    "app_id": "aapp_01jedmwbm3fparxt416r4hcvvb",
    "env_id": "aenv_01jedmwbm6e4ysf3bc1z9s07zj",
    "email": "ada@example.com",
    "email_verified": True,
    "name": "Ada Lovelace",
    "image": None,
    "username": "ada",
    "display_username": "Ada",
    "phone": None,
    "phone_verified": False,
    "role": "user",
    "password_changed_at": "2025-01-15T09:30:00Z",
    "banned": False,
    "ban_reason": None,
    "ban_expires": None,
    "metadata": {},
    "created_at": "2025-01-15T09:30:00Z",
    "updated_at": "2025-01-15T09:30:00Z",
    "deleted_at": None,
    "mfa_enabled": False,
}


@dataclasses.dataclass(frozen=True)
class EventType:
    name: str
    description: str
    # The audit actions (app/services/*: audit.record / audit.by_user) that mean this event.
    actions: tuple[str, ...]
    example_data: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(_EXAMPLE_USER))

    def example(self) -> dict[str, Any]:
        return {"type": self.name, "timestamp": "2025-01-15T09:30:00Z", "data": self.example_data}


CATALOG: tuple[EventType, ...] = (
    EventType(
        "user.created",
        "a user signed up, or was created by an admin, an API key or Faroe",
        ("user.signup", "user.created"),
    ),
    EventType(
        "user.updated",
        "a user's profile changed (by the user, an admin or Faroe)",
        ("user.updated",),
    ),
    EventType(
        "user.deleted",
        "a user was deleted (restorable until purged)",
        ("user.deleted",),
        {**_EXAMPLE_USER, "deleted_at": "2025-02-01T10:00:00Z"},
    ),
    EventType("user.restored", "a deleted user was restored", ("user.restored",)),
    EventType(
        "user.purged",
        "a user's row was erased for good; `data` holds the id alone",
        ("user.purged",),
        {"id": _EXAMPLE_USER["id"]},
    ),
    EventType(
        "user.banned",
        "a user was banned",
        ("user.banned",),
        {**_EXAMPLE_USER, "banned": True, "ban_reason": "spam", "ban_expires": None},
    ),
    EventType("user.unbanned", "a user's ban was lifted", ("user.unbanned",)),
    EventType("user.email_verified", "a user verified their address", ("user.email_verified",)),
    EventType(
        "user.email_changed",
        "a user confirmed a new e-mail address (or Faroe changed it)",
        ("user.email_changed",),
    ),
    EventType(
        "user.password_changed",
        "a password was changed by the user, set by an admin, reset by mail or changed by Faroe",
        ("user.password_changed", "user.password_set", "user.password_reset"),
    ),
    EventType(
        "user.mfa_enabled",
        "a user turned on a second factor",
        ("user.mfa_enabled",),
        {**_EXAMPLE_USER, "mfa_enabled": True},
    ),
    EventType(
        "user.mfa_disabled",
        "a user's second factor was removed (by the user or an admin)",
        ("user.mfa_disabled",),
    ),
    EventType(
        "session.revoked_all",
        "every session of a user was revoked (by an admin or Faroe)",
        ("session.revoked_all",),
    ),
    EventType(
        TEST_EVENT,
        "sent on demand by POST /v1/admin/webhooks/{webhook_id}/test; not subscribable",
        (),
        {"webhook_id": "awhk_01jhst2a9ef0hbx0n8k6wq3m7d", "message": "a test event"},
    ),
)
EVENT_TYPES = {event.name: event for event in CATALOG}
# What an endpoint may subscribe to: every event but the test, which goes to one endpoint.
SUBSCRIBABLE = tuple(event.name for event in CATALOG if event.name != TEST_EVENT)
EVENT_OF_ACTION = {action: event.name for event in CATALOG for action in event.actions}
# Faroe's update_user_email_address is the end of Faroe's own e-mail change flow: it writes
# `user.updated` (fields: email), but what happened is the REST door's `user.email_changed`.
FAROE_EMAIL_UPDATE = "update_user_email_address"


def event_type_of(action: str, metadata: Mapping[str, Any] | None) -> str | None:
    """The catalog event an audit row (its action and metadata) means, or None."""
    if action == "user.updated" and (metadata or {}).get("faroe_action") == FAROE_EMAIL_UPDATE:
        return "user.email_changed"
    return EVENT_OF_ACTION.get(action)


# The audit action of POST …/test: its id is the test event's webhook-id.
TESTED_ACTION = "webhook.tested"


def event_types() -> list[dict[str, Any]]:
    return [
        {"type": event.name, "description": event.description, "example": event.example()}
        for event in CATALOG
    ]


# ---- raising (from audit.py's flush hook, inside the change's transaction) -----------------

# Does the job's app have an enabled endpoint subscribed to its event? (ix_webhook_endpoints_app)
_SUBSCRIBED = """EXISTS (
    SELECT 1 FROM webhook_endpoints
    WHERE app_id = job.app_id AND enabled AND job.key = ANY(events))"""


@audit.on_new_events
def raise_events(connection: Connection, events: Sequence[audit.NewEvent]) -> None:
    """For each new audit row that means a catalog event: one fan-out job if the app listens.
    Synchronous: it runs inside the flush that writes the rows, one statement for all of them."""
    candidates = []
    for event in events:
        event_type = event_type_of(event.action, event.metadata)
        if event_type is None or event.app_id is None:
            continue
        candidates.append(
            jobs.Candidate(
                {"event_id": event.id, "event_type": event_type}, event.app_id, event_type
            )
        )
    jobs.enqueue_where(connection, FANOUT_JOB, candidates, condition=_SUBSCRIBED)


# raise_events does nothing with a row that means no catalog event (a sign-in's, say).
audit.hears(raise_events, lambda action, metadata: event_type_of(action, metadata) is not None)


# ---- the body of an event ------------------------------------------------------------------


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return _instant(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), default=_json_default)


async def build_body(db: AsyncSession, event_id: str) -> tuple[str, str] | None:
    """(event type, JSON body) of the audit event `event_id`, or None when it is gone. `data`
    is the user view as it is now (never a hash, token or secret): the id alone for a user
    purged since."""
    event = await db.get(AuditEvent, event_id)
    if event is None:
        return None
    if event.action == TESTED_ACTION:
        event_type = TEST_EVENT
        data: dict[str, Any] = {
            "webhook_id": event.event_metadata.get("webhook_id"),
            "message": "a test event from Userkeep",
        }
    else:
        found = event_type_of(event.action, event.event_metadata)
        if found is None:
            return None
        event_type = found
        user = await db.get(User, event.target_user_id) if event.target_user_id else None
        data = users.view(user) if user is not None else {"id": event.target_user_id}
    body = {"type": event_type, "timestamp": _instant(event.created_at), "data": data}
    return event_type, encode(body)


@jobs.job_kind(FANOUT_JOB, retry=FANOUT_RETRY, safe_keys=("event_id", "event_type"))
async def fan_out(job: jobs.Job, env: jobs.JobEnv) -> None:
    """One deliver job per enabled endpoint of the app subscribed to the event, all in one
    transaction (a failure adds none; the retry adds them all)."""
    async with env.sessions() as db, db.begin():
        built = await build_body(db, job.payload["event_id"])
        if built is None:
            return
        event_type, body = built
        endpoints = (
            await db.execute(
                select(col(WebhookEndpoint.id)).where(
                    col(WebhookEndpoint.app_id) == job.app_id,
                    col(WebhookEndpoint.enabled),
                    col(WebhookEndpoint.events).any(event_type),  # type: ignore[arg-type]
                )
            )
        ).scalars()
        for endpoint_id in endpoints:
            await jobs.enqueue(
                db,
                DELIVER_JOB,
                {
                    "endpoint_id": endpoint_id,
                    "event_id": job.payload["event_id"],
                    "event_type": event_type,
                    "body": body,
                },
                app_id=job.app_id,
            )


# ---- delivery ------------------------------------------------------------------------------


class Refused(Exception):
    """The destination may not be called (SSRF guard): retrying cannot help."""


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global
    )


async def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to: every address the name resolves to is checked, and the
    request then goes to the checked one, so a DNS answer that changes between the check and
    the connection (DNS rebinding) cannot send it elsewhere."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise OSError(f"cannot resolve {host}")
    if not allow_private:
        for address in addresses:
            if _forbidden(address):
                raise Refused(
                    f"refused: {host} resolves to {address}, a loopback, private, link-local "
                    "or reserved address (WEBHOOK_ALLOW_PRIVATE=true allows it)"
                )
    return str(addresses[0])


# Kept-alive clients: a new client per delivery (its pool, its TCP and TLS handshakes) cost
# more worker CPU than the rest of the delivery (docs/performance.md, "Webhook delivery").
MAX_CLIENTS = 32
# An idle connection is dropped after 4 s, before the 5 s after which common servers (Node,
# uvicorn) close theirs: a request sent on a connection the receiver is closing fails (then
# is retried in 5 s), a race a connection per delivery never had.
KEEPALIVE = httpx.Limits(max_connections=100, max_keepalive_connections=8, keepalive_expiry=4.0)


@dataclasses.dataclass
class _Lease:
    client: httpx.AsyncClient
    users: int = 0
    evicted: bool = False


class _ClientPool:
    """One kept-alive client per destination (scheme, host name, port, CA file), the most
    recently used MAX_CLIENTS of them, for one event loop (httpx's connections belong to the
    loop that opened them).

    Per host NAME, not per address: httpx pools connections by the address the request goes
    to (the checked one, see `send`), and a TLS connection was verified for the name in its
    SNI. Two names on one address (a CDN) in one client could otherwise send b.example's
    event down a.example's connection, never checked against b.example's certificate. The
    SSRF check is unchanged: every send resolves and checks again, and a kept connection is
    used only when the request goes to the very address it was opened to."""

    def __init__(self) -> None:
        self._leases: dict[tuple[str, str, int, Path | None], _Lease] = {}

    @contextlib.asynccontextmanager
    async def lease(
        self, key: tuple[str, str, int, Path | None]
    ) -> AsyncIterator[httpx.AsyncClient]:
        lease = self._leases.pop(key, None)
        if lease is None:
            # Off the event loop: the first call of a process reads the CA files.
            verify = await asyncio.to_thread(tls.client_context, key[3])
            lease = self._leases.pop(key, None) or _Lease(
                httpx.AsyncClient(
                    follow_redirects=False, trust_env=False, verify=verify, limits=KEEPALIVE
                )
            )
        self._leases[key] = lease  # last: the most recently used
        while len(self._leases) > MAX_CLIENTS:
            oldest = self._leases.pop(next(iter(self._leases)))
            oldest.evicted = True
            if oldest.users == 0:
                await oldest.client.aclose()
        lease.users += 1
        try:
            yield lease.client
        finally:
            lease.users -= 1
            if lease.evicted and lease.users == 0:
                await lease.client.aclose()

    async def aclose(self) -> None:
        leases, self._leases = list(self._leases.values()), {}
        for lease in leases:
            lease.evicted = True
            if lease.users == 0:
                await lease.client.aclose()


_POOLS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientPool]" = (
    weakref.WeakKeyDictionary()
)


def _clients() -> _ClientPool:
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = _ClientPool()
    return pool


@jobs.at_loop_end
async def close_clients() -> None:
    """Close this event loop's kept-alive connections (a worker loop that stops)."""
    pool = _POOLS.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.aclose()


@dataclasses.dataclass
class Attempt:
    status: str  # succeeded / failed
    http_status: int | None = None
    duration_ms: int = 0
    error: str | None = None
    response_body: str | None = None
    refused: bool = False
    disabled: bool = False  # the endpoint was disabled after this attempt


def signature(secrets_: Sequence[str], event_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header: `v1,<base64>` per secret, space-separated."""
    at = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(secret).sign(event_id, at, body) for secret in secrets_)


async def send(
    url: str,
    event_id: str,
    body: str,
    secrets_: Sequence[str],
    allow_private: bool,
    ca_file: Path | None = None,
) -> Attempt:
    """One POST: at most TIMEOUT_SECONDS in all, no redirect followed, at most 4 KiB read.
    HTTPS is verified against the system's CAs plus `ca_file` (WEBHOOK_TLS_CA_FILE); a
    certificate that fails means no request at all, never one in clear."""
    started = time.monotonic()
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # Receivers compare webhook-timestamp with their own clock: the wall clock, not the app's.
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "Userkeep-Webhooks/1",
        # The answer is read raw: a compressed one would inflate past the 4 KiB read.
        "accept-encoding": "identity",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_, event_id, timestamp, body),
        # The name the receiver expects, whichever address the request goes to.
        "host": parts.netloc.rsplit("@", 1)[-1],
    }

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            address = await resolve(host, port, allow_private)
            # To the checked address itself; TLS still checks the certificate against the
            # host name, which goes in SNI (httpcore verifies against sni_hostname).
            target = httpx.URL(url).copy_with(host=address)
            extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
            async with (
                _clients().lease((parts.scheme, host, port, ca_file)) as client,
                client.stream(
                    "POST", target, content=body.encode(), headers=headers, extensions=extensions
                ) as response,
            ):
                received = bytearray()
                async for chunk in response.aiter_raw():
                    received += chunk
                    if len(received) >= MAX_RESPONSE_BYTES:
                        break
                text = bytes(received[:MAX_RESPONSE_BYTES]).decode("utf-8", "replace")
                ok = 200 <= response.status_code < 300
                return Attempt(
                    status="succeeded" if ok else "failed",
                    http_status=response.status_code,
                    duration_ms=elapsed(),
                    error=None if ok else f"HTTP {response.status_code}",
                    response_body=text,
                )
    except Refused as exc:
        return Attempt("failed", duration_ms=elapsed(), error=str(exc), refused=True)
    except TimeoutError:
        return Attempt(
            "failed", duration_ms=elapsed(), error=f"no answer in {TIMEOUT_SECONDS:.0f} s"
        )
    except (httpx.HTTPError, OSError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return Attempt("failed", duration_ms=elapsed(), error=message)


def _secrets(
    settings: Settings,
    endpoint_id: str,
    secret: str,
    previous_secret: str | None,
    previous_secret_expires_at: datetime | None,
    now: datetime,
) -> list[str]:
    """The secrets that sign now: the current one, and the previous one for 24 h."""
    box = secret_box.box(settings)
    found = [box.decrypt(SECRET_PURPOSE, secret, endpoint_id)]
    if (
        previous_secret is not None
        and previous_secret_expires_at is not None
        and previous_secret_expires_at > now
    ):
        found.append(box.decrypt(SECRET_PURPOSE, previous_secret, endpoint_id))
    return found


# What a delivery reads of its endpoint, and writes after the attempt. Core statements, not
# the ORM: its identity map, flush and update synchronisation were a third of a delivery's
# CPU (docs/performance.md, "Webhook delivery").
_ENDPOINT = select(
    col(WebhookEndpoint.enabled),
    col(WebhookEndpoint.url),
    col(WebhookEndpoint.secret),
    col(WebhookEndpoint.previous_secret),
    col(WebhookEndpoint.previous_secret_expires_at),
    col(WebhookEndpoint.failing_since),
).where(col(WebhookEndpoint.id) == bindparam("endpoint_id"))
_RECORD = sql_insert(WebhookDelivery.__table__)  # type: ignore[attr-defined]
_CLEAR_FAILING = (
    sql_update(WebhookEndpoint.__table__)  # type: ignore[attr-defined]
    .where(
        col(WebhookEndpoint.id) == bindparam("endpoint_id"),
        col(WebhookEndpoint.failing_since).is_not(None),
    )
    .values(failing_since=None)
)


class DeliveryFailed(Exception):
    """Raised to the job layer so that it retries on DELIVERY_RETRY."""


@jobs.job_kind(
    DELIVER_JOB,
    retry=DELIVERY_RETRY,
    safe_keys=("endpoint_id", "event_id", "event_type"),
    # Above the fan-outs: with a backlog of them, a delivery (and its event) otherwise waits
    # until the last fan-out has run (26 s at p50 in bench/results/webhooks.md, 200 changes/s).
    priority=DELIVER_PRIORITY,
)
async def deliver(job: jobs.Job, env: jobs.JobEnv) -> None:
    payload = job.payload
    endpoint_id = payload["endpoint_id"]
    # Reads without a transaction (one row; a manual retry's body, two): nothing is held
    # while the request runs, and no BEGIN and COMMIT round trips.
    async with env.reads() as reads:
        endpoint = (await reads.execute(_ENDPOINT, {"endpoint_id": endpoint_id})).first()
        if endpoint is None or not endpoint.enabled:
            return  # deleted or disabled since: nothing more is sent to it
        body = payload.get("body")
        if body is None:  # a delivery retried by hand: the body as it is now
            built = await build_body(reads, payload["event_id"])
            if built is None:
                return
            body = built[1]
    signing = _secrets(
        env.settings,
        endpoint_id,
        endpoint.secret,
        endpoint.previous_secret,
        endpoint.previous_secret_expires_at,
        clock.now(),
    )
    was_failing = endpoint.failing_since is not None
    async with env.sessions() as db:
        attempt = await _deliver_once(job, env, db, endpoint.url, body, signing, was_failing)
    if attempt.status == "succeeded":
        return
    log.info("webhook %s to %s failed: %s", payload["event_id"], endpoint_id, attempt.error)
    if attempt.refused or attempt.disabled:
        raise jobs.PermanentFailure(attempt.error or "refused")
    raise DeliveryFailed(attempt.error)


async def _deliver_once(
    job: jobs.Job,
    env: jobs.JobEnv,
    db: AsyncSession,
    url: str,
    body: str,
    signing: list[str],
    was_failing: bool,
) -> Attempt:
    """Send, then record the attempt and the endpoint's health in one transaction."""
    payload = job.payload
    attempt = await send(
        url,
        payload["event_id"],
        body,
        signing,
        env.settings.webhook_allow_private,
        env.settings.webhook_tls_ca_file,
    )
    now = clock.now()
    retries_left = attempt.status == "failed" and not attempt.refused
    retries_left = retries_left and job.attempt < DELIVERY_RETRY.max_attempts
    async with db.begin():
        await db.execute(
            _RECORD,
            {
                "id": new_id(Prefix.WEBHOOK_DELIVERY),
                "endpoint_id": payload["endpoint_id"],
                "event_id": payload["event_id"],
                "event_type": payload["event_type"],
                "attempt": job.attempt,
                "status": attempt.status,
                "http_status": attempt.http_status,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
                "response_body": attempt.response_body,
                "next_retry_at": now + DELIVERY_RETRY.delay(job.attempt) if retries_left else None,
                "created_at": now,
            },
        )
        attempt.disabled = await _track_health(
            db, payload["endpoint_id"], attempt, now, was_failing
        )
    return attempt


async def _track_health(
    db: AsyncSession, endpoint_id: str, attempt: Attempt, now: datetime, was_failing: bool
) -> bool:
    """Success clears `failing_since`; a failure starts it, and after DISABLE_AFTER of
    failures without a success the endpoint is disabled with the reason. True if disabled.

    Concurrent deliveries to one endpoint all run this. The delivery row just added holds a
    KEY SHARE lock on the endpoint (its foreign key): FOR UPDATE here would be an upgrade that
    two such transactions deadlock on, so the lock is FOR NO KEY UPDATE (no key changes), and
    a success writes the row only when it was failing (a healthy endpoint is not locked).

    `was_failing`: whether the endpoint was failing when this delivery read it. A success to
    an endpoint that was healthy then writes nothing, not even an UPDATE that matches no row
    (the common case, one statement less per event). A failure recorded by a concurrent
    delivery meanwhile stays: the two crossed, and the next success clears it."""
    if attempt.status == "succeeded":
        if was_failing:
            await db.execute(_CLEAR_FAILING, {"endpoint_id": endpoint_id})
        return False
    endpoint = await db.get(WebhookEndpoint, endpoint_id, with_for_update={"key_share": True})
    if endpoint is None:
        return True
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        return False
    if not endpoint.enabled or now - endpoint.failing_since < DISABLE_AFTER:
        return not endpoint.enabled
    endpoint.enabled = False
    endpoint.disabled_reason = (
        f"disabled automatically: every delivery failed since {_instant(endpoint.failing_since)} "
        f"(last error: {attempt.error})"
    )[:MAX_ERROR_CHARS]
    endpoint.updated_at = now
    audit.record(
        db,
        "webhook.disabled",
        origin=Origin(),
        app_id=endpoint.app_id,
        actor_type="system",
        metadata={"webhook_id": endpoint.id, "reason": endpoint.disabled_reason},
    )
    log.warning("webhook endpoint %s disabled: %s", endpoint.id, endpoint.disabled_reason)
    return True


# ---- administration ------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as admins see it: never a secret."""
    return {
        "id": endpoint.id,
        "app_id": endpoint.app_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": endpoint.failing_since,
        "previous_secret_expires_at": endpoint.previous_secret_expires_at,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


def delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhook_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "attempt": delivery.attempt,
        "status": delivery.status,
        "http_status": delivery.http_status,
        "duration_ms": delivery.duration_ms,
        "error": delivery.error,
        "response_body": delivery.response_body,
        "next_retry_at": delivery.next_retry_at,
        "created_at": delivery.created_at,
    }


def _record(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    action: str,
    endpoint: WebhookEndpoint,
    metadata: dict[str, Any] | None = None,
) -> None:
    audit.record(
        db,
        action,
        origin=origin,
        app_id=endpoint.app_id,
        actor_type=principal.actor_type,
        actor_id=principal.actor_id,
        metadata={"webhook_id": endpoint.id, **(metadata or {})},
    )


async def _find(
    db: AsyncSession, principal: AdminPrincipal, webhook_id: str, lock: bool = False
) -> WebhookEndpoint:
    endpoint = await db.get(WebhookEndpoint, webhook_id, with_for_update=lock)
    # Another app's endpoint reads as no endpoint at all.
    if endpoint is None or not principal.can_reach(endpoint.app_id):
        raise NotFound("webhook not found")
    return endpoint


@dataclasses.dataclass(frozen=True)
class Created:
    endpoint: dict[str, Any]
    secret: str


async def create(
    db: AsyncSession,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    app_ref: str | None,
    url: str,
    events: list[str],
    description: str,
    enabled: bool,
) -> Created:
    secret = new_secret()
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        now = clock.now()
        endpoint_id = new_id(Prefix.WEBHOOK)
        endpoint = WebhookEndpoint(
            id=endpoint_id,
            app_id=app.id,
            url=url,
            description=description,
            events=sorted(set(events)),
            enabled=enabled,
            secret=secret_box.box(settings).encrypt(SECRET_PURPOSE, secret, endpoint_id),
            created_at=now,
            updated_at=now,
        )
        db.add(endpoint)
        _record(db, origin, principal, "webhook.created", endpoint, {"url": url})
        return Created(view(endpoint), secret)


async def list_endpoints(
    db: AsyncSession, principal: AdminPrincipal, app_ref: str | None
) -> list[dict[str, Any]]:
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        found = await db.execute(
            select(WebhookEndpoint)
            .where(col(WebhookEndpoint.app_id) == app.id)
            .order_by(col(WebhookEndpoint.id))
        )
        return [view(endpoint) for endpoint in found.scalars()]


async def get(db: AsyncSession, principal: AdminPrincipal, webhook_id: str) -> dict[str, Any]:
    async with db.begin():
        return view(await _find(db, principal, webhook_id))


async def update(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    webhook_id: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Change url, events, description or enabled; enabling clears the disabled reason and
    the failure streak (a fresh start)."""
    async with db.begin():
        endpoint = await _find(db, principal, webhook_id, lock=True)
        if "events" in changes:
            changes["events"] = sorted(set(changes["events"]))
        for field, value in changes.items():
            setattr(endpoint, field, value)
        if changes.get("enabled") is True:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        endpoint.updated_at = clock.now()
        _record(db, origin, principal, "webhook.updated", endpoint, {"fields": sorted(changes)})
        return view(endpoint)


async def delete(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, webhook_id: str
) -> None:
    async with db.begin():
        endpoint = await _find(db, principal, webhook_id, lock=True)
        _record(db, origin, principal, "webhook.deleted", endpoint, {"url": endpoint.url})
        await db.delete(endpoint)


async def rotate_secret(
    db: AsyncSession,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    webhook_id: str,
) -> Created:
    """A new secret; the current one keeps signing (a second signature) for 24 h. A rotation
    within those 24 h drops the older previous secret."""
    secret = new_secret()
    async with db.begin():
        endpoint = await _find(db, principal, webhook_id, lock=True)
        now = clock.now()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
        endpoint.secret = secret_box.box(settings).encrypt(SECRET_PURPOSE, secret, endpoint.id)
        endpoint.updated_at = now
        _record(db, origin, principal, "webhook.secret_rotated", endpoint)
        return Created(view(endpoint), secret)


async def send_test(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, webhook_id: str
) -> str:
    """Queue a `webhook.test` delivery to this endpoint; its webhook-id is the id of the
    `webhook.tested` audit row written with it."""
    async with db.begin():
        endpoint = await _find(db, principal, webhook_id)
        if not endpoint.enabled:
            raise Conflict("the webhook is disabled; enable it first")
        event_id = audit.record(
            db,
            TESTED_ACTION,
            origin=origin,
            app_id=endpoint.app_id,
            actor_type=principal.actor_type,
            actor_id=principal.actor_id,
            metadata={"webhook_id": endpoint.id},
        )
        await db.flush()
        built = await build_body(db, event_id)
        assert built is not None
        await jobs.enqueue(
            db,
            DELIVER_JOB,
            {
                "endpoint_id": endpoint.id,
                "event_id": event_id,
                "event_type": TEST_EVENT,
                "body": built[1],
            },
            app_id=endpoint.app_id,
        )
        return event_id


async def list_deliveries(
    db: AsyncSession,
    principal: AdminPrincipal,
    webhook_id: str,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Every attempt to this endpoint, newest first, with a cursor."""
    async with db.begin():
        await _find(db, principal, webhook_id)
        query = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == webhook_id)
        if cursor is not None:
            last = cursors.decode(cursor).get("delivery")
            if not isinstance(last, str) or not is_valid(last, Prefix.WEBHOOK_DELIVERY):
                raise ValidationFailed("cursor", "is not a cursor of this list")
            query = query.where(col(WebhookDelivery.id) < last)
        rows = list(
            (await db.execute(query.order_by(col(WebhookDelivery.id).desc()).limit(limit + 1)))
            .scalars()
            .all()
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "deliveries": [delivery_view(row) for row in rows],
        "limit": limit,
        "next_cursor": cursors.encode({"delivery": rows[-1].id}) if more else None,
    }


async def retry_delivery(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    webhook_id: str,
    delivery_id: str,
) -> str:
    """Send that delivery's event to the endpoint again (a new job, the same webhook-id, the
    body rebuilt from the event: the user as they are now)."""
    async with db.begin():
        endpoint = await _find(db, principal, webhook_id)
        delivery = await db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("delivery not found")
        if not endpoint.enabled:
            raise Conflict("the webhook is disabled; enable it first")
        await jobs.enqueue(
            db,
            DELIVER_JOB,
            {
                "endpoint_id": endpoint.id,
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
            },
            app_id=endpoint.app_id,
        )
        _record(
            db,
            origin,
            principal,
            "webhook.delivery_retried",
            endpoint,
            {"delivery_id": delivery.id, "event_id": delivery.event_id},
        )
        return delivery.event_id
