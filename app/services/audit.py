"""The audit trail: one row per auth event or admin action, in the caller's transaction."""

from dataclasses import dataclass
from typing import Any

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
) -> None:
    """Add the event to the session; it is written by the same commit as the change it records."""
    db.add(
        AuditEvent(
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
    )


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
