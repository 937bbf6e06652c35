"""The audit trail: one row per auth event or admin action, in the caller's transaction.

It is also where webhooks are raised: every event of either door passes through `record`, so a
flush hook here (below) hands each new row to its subscribers (app/services/webhooks.py) in the
same flush, and a caller can neither forget to raise an event nor raise one for a change that
rolls back.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session, UOWTransaction
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.ids import Prefix, new_id
from app.models import AuditEvent, User


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit log and the session list."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Impersonation:
    """An admin acting as a user through an impersonation session."""

    admin_id: str
    user_id: str
    session_id: str


# Set for a request made with an impersonation session (api/deps.get_principal), None at the
# start of every request (middleware.RequestId). `record` reads it, so every audit row such a
# request writes names the admin as well as the user — whatever service writes it, including
# ones that know nothing of impersonation.
impersonation: ContextVar[Impersonation | None] = ContextVar("impersonation", default=None)


def by_user(
    db: AsyncSession,
    action: str,
    origin: Origin,
    user: User,
    metadata: dict[str, Any] | None = None,
) -> None:
    """An event a user caused about themselves (sign-up, sign-in, password change, …)."""
    db.add(user_event(action, origin, user, metadata))


def user_event(
    action: str, origin: Origin, user: User, metadata: dict[str, Any] | None = None
) -> AuditEvent:
    """The row `by_user` adds, not yet in any session (sessions.issue_with_event writes it in
    a statement of its own)."""
    return new_event(
        action,
        origin=origin,
        app_id=user.app_id,
        env_id=user.env_id,
        actor_id=user.id,
        target_user_id=user.id,
        metadata=metadata,
    )


def record(
    db: AsyncSession,
    action: str,
    *,
    origin: Origin,
    app_id: str | None,
    env_id: str | None = None,
    actor_type: str = "user",
    actor_id: str | None = None,
    target_user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Add the event to the session; it is written by the same commit as the change it records.
    Returns its id. Under an impersonation, the admin is the actor of what the user seems to
    do, and the metadata names the admin and the session."""
    event = new_event(
        action,
        origin=origin,
        app_id=app_id,
        env_id=env_id,
        actor_type=actor_type,
        actor_id=actor_id,
        target_user_id=target_user_id,
        metadata=metadata,
    )
    db.add(event)
    return event.id


def new_event(
    action: str,
    *,
    origin: Origin,
    app_id: str | None,
    env_id: str | None = None,
    actor_type: str = "user",
    actor_id: str | None = None,
    target_user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    """The row `record` adds (the impersonation rules applied), not yet in any session: for
    `record`, and for a writer of one statement that asked `unheard` first."""
    acting = impersonation.get()
    if acting is not None:
        metadata = {
            **(metadata or {}),
            "impersonated_by": acting.admin_id,
            "impersonation_session_id": acting.session_id,
        }
        if actor_id == acting.user_id:
            actor_type, actor_id = "admin", acting.admin_id
    return AuditEvent(
        id=new_id(Prefix.AUDIT),
        app_id=app_id,
        env_id=env_id,
        action=action,
        actor_type=actor_type,
        actor_id=actor_id,
        target_user_id=target_user_id,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:512] or None,
        created_at=clock.now(),
        event_metadata=metadata or {},
    )


# The columns of an audit row in a hand-written INSERT, in the order of `insert_values`.
INSERT_COLUMNS = (
    "id, app_id, env_id, action, actor_type, actor_id, target_user_id, ip, user_agent, "
    "created_at, metadata"
)


def insert_values(event: AuditEvent) -> tuple[Any, ...]:
    """The values of INSERT_COLUMNS for `event` (metadata as a dict: jsonb on the lookup pool)."""
    return (
        event.id,
        event.app_id,
        event.env_id,
        event.action,
        event.actor_type,
        event.actor_id,
        event.target_user_id,
        event.ip,
        event.user_agent,
        event.created_at,
        event.event_metadata,
    )


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What flush subscribers hear of a new audit row."""

    id: str
    app_id: str | None
    action: str
    metadata: Mapping[str, Any]


FlushSubscriber = Callable[[Connection, list[NewEvent]], None]
# Who hears of new audit rows in the flush that writes them. webhooks.py subscribes when it is
# imported (by the app, the workers and the CLI), so this module need not know it.
_subscribers: list[FlushSubscriber] = []
# What each subscriber acts on, where it said so (`hears`): action and metadata to whether
# it does anything with such a row.
_hearing: dict[FlushSubscriber, Callable[[str, Mapping[str, Any]], bool]] = {}


def on_new_events(subscriber: FlushSubscriber) -> FlushSubscriber:
    """Call `subscriber(connection, rows)` before each flush that writes new audit rows, on
    the flush's own connection: in the change's transaction."""
    _subscribers.append(subscriber)
    return subscriber


def hears(subscriber: FlushSubscriber, acts_on: Callable[[str, Mapping[str, Any]], bool]) -> None:
    """Declare which rows `subscriber` acts on, so that `unheard` can tell a row it ignores."""
    _hearing[subscriber] = acts_on


def unheard(action: str, metadata: Mapping[str, Any] | None = None) -> bool:
    """True when no subscriber acts on such a row: only then may it be written by a statement
    of its own, outside a flush (a subscriber that declared nothing hears every row)."""
    return not any(
        subscriber not in _hearing or _hearing[subscriber](action, metadata or {})
        for subscriber in _subscribers
    )


@event.listens_for(Session, "before_flush")
def _hand_new_events(session: Session, context: UOWTransaction, instances: object) -> None:
    if not _subscribers:
        return
    new = [
        NewEvent(row.id, row.app_id, row.action, row.event_metadata or {})
        for row in session.new
        if isinstance(row, AuditEvent)
    ]
    if not new:
        return
    for subscriber in _subscribers:
        subscriber(session.connection(), new)


@dataclass(frozen=True, slots=True)
class Subject:
    """One row of `record_many`: the user it is about and its metadata."""

    user_id: str
    metadata: Mapping[str, Any]


_INSERT_MANY = text(
    """
    INSERT INTO audit_events (id, app_id, env_id, action, actor_type, actor_id, target_user_id,
                              ip, user_agent, created_at, metadata)
    SELECT e.id, :app_id, :env_id, :action, :actor_type, :actor_id, e.target_user_id, :ip,
           :user_agent, :created_at, CAST(e.metadata AS jsonb)
    FROM unnest(CAST(:ids AS text[]), CAST(:targets AS text[]), CAST(:metadata AS text[]))
        AS e(id, target_user_id, metadata)
    """
)


async def record_many(
    db: AsyncSession,
    action: str,
    subjects: Sequence[Subject],
    *,
    origin: Origin,
    app_id: str,
    env_id: str,
    actor_type: str,
    actor_id: str | None,
) -> None:
    """The rows `record` would add, one per subject, written now in one statement (a bulk
    import's thousand `user.created` rows cost one round trip, not a thousand ORM objects);
    the flush subscribers hear of them as of any other, in the same transaction."""
    if not subjects:
        return
    ids = [new_id(Prefix.AUDIT) for _ in subjects]
    connection = await db.connection()
    await connection.execute(
        _INSERT_MANY,
        {
            "app_id": app_id,
            "env_id": env_id,
            "action": action,
            "actor_type": actor_type,
            "actor_id": actor_id,
            "ip": origin.ip,
            "user_agent": (origin.user_agent or "")[:512] or None,
            "created_at": clock.now(),
            "ids": ids,
            "targets": [subject.user_id for subject in subjects],
            "metadata": [json.dumps(dict(subject.metadata)) for subject in subjects],
        },
    )
    new = [
        NewEvent(event_id, app_id, action, subject.metadata)
        for event_id, subject in zip(ids, subjects, strict=True)
    ]

    def hand(sync: Connection) -> None:
        for subscriber in _subscribers:
            subscriber(sync, new)

    await connection.run_sync(hand)


def view(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "action": event.action,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "target_user_id": event.target_user_id,
        "app_id": event.app_id,
        "env_id": event.env_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "created_at": event.created_at,
        "metadata": event.event_metadata,
    }


def view_for_subject(event: AuditEvent, user_id: str) -> dict[str, Any]:
    """An event as the user it is about sees it (their export): an actor who is not the user
    — an admin, an API key, the operator, whoever typed at the sign-in form — appears as a
    role only, without id, address or browser."""
    shown = view(event)
    if event.actor_id != user_id:
        shown.update(actor_id=None, ip=None, user_agent=None)
    return shown
