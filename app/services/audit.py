"""The audit trail: one row per auth event or admin action, in the caller's transaction.

It is also where webhooks are raised: every event of either door passes through `record`, so a
flush hook here (below) hands each new row to app/services/webhooks.py in the same flush, and a
caller can neither forget to raise an event nor raise one for a change that rolls back.
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
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


def by_user(
    db: AsyncSession,
    action: str,
    origin: Origin,
    user: User,
    metadata: dict[str, Any] | None = None,
) -> None:
    """An event a user caused about themselves (sign-up, sign-in, password change, …)."""
    record(
        db,
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
    Returns its id."""
    event_id = new_id(Prefix.AUDIT)
    db.add(
        AuditEvent(
            id=event_id,
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
    )
    return event_id


@event.listens_for(Session, "before_flush")
def _raise_webhook_events(session: Session, context: UOWTransaction, instances: object) -> None:
    """Before the new audit rows are written: their webhook fan-out jobs, on the flush's own
    connection and so in the change's transaction (webhooks.raise_events)."""
    new = [row for row in session.new if isinstance(row, AuditEvent)]
    if not new:
        return
    # Imported here: webhooks imports the job layer, which imports this module.
    from app.services import webhooks

    webhooks.raise_events(session.connection(), new)


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
