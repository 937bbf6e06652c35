"""/v1/admin/webhooks: an app's webhook endpoints, their secrets and their deliveries.

Thin: parse, call services/webhooks, shape. The callers are those of every admin route
(admin.get_admin): admins and API keys of the app, the default app's for every app.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from app.api.admin import APP_NOT_FOUND, CALLER, Admin
from app.api.deps import Config, Db, From, rate_limit
from app.api.openapi import JSON_BODY, answer, errors
from app.api.schemas import StatusOut
from app.api.webhook_schemas import (
    DeliveriesOut,
    DeliveryId,
    DeliveryQuery,
    EventTypesOut,
    QueuedOut,
    WebhookCreatedOut,
    WebhookId,
    WebhookIn,
    WebhookListQuery,
    WebhookOut,
    WebhookPatch,
    WebhooksOut,
)
from app.errors import Conflict, NotFound, ValidationFailed
from app.services import webhooks


class _Route(APIRoute):
    """A `{webhook_id}` segment never captures the fixed `/event-types` (concrete paths match
    before templated ones), so e.g. `PATCH /webhooks/event-types` is a 405 naming GET."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if (
            match is not Match.NONE
            and child.get("path_params", {}).get("webhook_id") == "event-types"
        ):
            return Match.NONE, {}
        return match, child


router = APIRouter(
    prefix="/v1/admin/webhooks",
    tags=["admin"],
    dependencies=[Depends(rate_limit("admin"))],
    route_class=_Route,
)

WEBHOOK_NOT_FOUND = NotFound("webhook not found")
BAD_WEBHOOK_ID = ValidationFailed("webhook_id", "must be a TypeID with prefix awhk_")
UNKNOWN_EVENT = ValidationFailed(
    "events.0", "unknown event type 'user.exploded'; GET /v1/admin/webhooks/event-types lists them"
)
BAD_URL = ValidationFailed(
    "url", "must not carry credentials (user:password@); the signature authenticates"
)
DISABLED = Conflict("the webhook is disabled; enable it first")


@router.get(
    "/event-types",
    name="webhooks.event_types",
    summary="List the webhook event types",
    response_model=EventTypesOut,
    responses=errors(CALLER),
)
async def event_types(caller: Admin) -> dict[str, Any]:
    """Every event an endpoint can subscribe to, each with an example body (`data` is the user
    as `GET /v1/admin/users/{user_id}` shows it)."""
    return {"event_types": webhooks.event_types()}


@router.post(
    "",
    name="webhooks.create",
    summary="Create a webhook endpoint",
    status_code=201,
    response_model=WebhookCreatedOut,
    responses=errors(CALLER, JSON_BODY, BAD_URL, UNKNOWN_EVENT, APP_NOT_FOUND),
)
async def create_webhook(
    body: WebhookIn, caller: Admin, db: Db, settings: Config, origin: From
) -> dict[str, Any]:
    """Subscribe a URL to events. The signing `secret` (`whsec_…`) is in this answer only: it
    is stored encrypted and never shown again (rotate it to get a new one)."""
    created = await webhooks.create(
        db,
        settings,
        origin,
        caller,
        body.app_id,
        body.url,
        body.events,
        body.description,
        body.enabled,
    )
    return {**created.endpoint, "secret": created.secret}


@router.get(
    "",
    name="webhooks.list",
    summary="List webhook endpoints",
    response_model=WebhooksOut,
    responses=errors(
        CALLER, ValidationFailed("app_id", "must be a TypeID with prefix aapp_"), APP_NOT_FOUND
    ),
)
async def list_webhooks(
    query: Annotated[WebhookListQuery, Query()], caller: Admin, db: Db
) -> dict[str, Any]:
    """The app's endpoints, without their secrets."""
    return {"webhooks": await webhooks.list_endpoints(db, caller, query.app_id)}


@router.get(
    "/{webhook_id}",
    name="webhooks.get",
    summary="Get a webhook endpoint",
    response_model=WebhookOut,
    responses=errors(CALLER, BAD_WEBHOOK_ID, WEBHOOK_NOT_FOUND),
)
async def get_webhook(webhook_id: WebhookId, caller: Admin, db: Db) -> dict[str, Any]:
    """One endpoint, without its secret."""
    return await webhooks.get(db, caller, webhook_id)


@router.patch(
    "/{webhook_id}",
    name="webhooks.update",
    summary="Change a webhook endpoint",
    response_model=WebhookOut,
    responses=errors(CALLER, JSON_BODY, BAD_WEBHOOK_ID, UNKNOWN_EVENT, WEBHOOK_NOT_FOUND),
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookPatch, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Change the URL, events, description or `enabled`; absent fields stay. Enabling an
    endpoint that was disabled after failing clears `disabled_reason`."""
    return await webhooks.update(db, origin, caller, webhook_id, body.changes())


@router.delete(
    "/{webhook_id}",
    name="webhooks.delete",
    summary="Delete a webhook endpoint",
    response_model=StatusOut,
    responses=errors(CALLER, BAD_WEBHOOK_ID, WEBHOOK_NOT_FOUND) | answer({"status": "deleted"}),
)
async def delete_webhook(
    webhook_id: WebhookId, caller: Admin, db: Db, origin: From
) -> dict[str, str]:
    """Delete the endpoint and its delivery history; its pending deliveries are dropped."""
    await webhooks.delete(db, origin, caller, webhook_id)
    return {"status": "deleted"}


@router.post(
    "/{webhook_id}/rotate-secret",
    name="webhooks.rotate_secret",
    summary="Rotate a webhook's signing secret",
    response_model=WebhookCreatedOut,
    responses=errors(CALLER, BAD_WEBHOOK_ID, WEBHOOK_NOT_FOUND),
)
async def rotate_secret(
    webhook_id: WebhookId, caller: Admin, db: Db, settings: Config, origin: From
) -> dict[str, Any]:
    """A new `secret`, shown in this answer only. For 24 hours deliveries carry two
    signatures, the new secret's and the old one's, so receivers can switch without a gap."""
    rotated = await webhooks.rotate_secret(db, settings, origin, caller, webhook_id)
    return {**rotated.endpoint, "secret": rotated.secret}


@router.post(
    "/{webhook_id}/test",
    name="webhooks.test",
    summary="Send a test event to a webhook",
    status_code=202,
    response_model=QueuedOut,
    responses=errors(CALLER, BAD_WEBHOOK_ID, WEBHOOK_NOT_FOUND, DISABLED),
)
async def test_webhook(
    webhook_id: WebhookId, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Queue a `webhook.test` event to this endpoint; its delivery shows in the list."""
    event_id = await webhooks.send_test(db, origin, caller, webhook_id)
    return {"status": "queued", "event_id": event_id}


@router.get(
    "/{webhook_id}/deliveries",
    name="webhooks.deliveries.list",
    summary="List a webhook's delivery attempts",
    response_model=DeliveriesOut,
    responses=errors(
        CALLER,
        BAD_WEBHOOK_ID,
        ValidationFailed("cursor", "is not a cursor of this list"),
        WEBHOOK_NOT_FOUND,
    ),
)
async def list_deliveries(
    webhook_id: WebhookId, query: Annotated[DeliveryQuery, Query()], caller: Admin, db: Db
) -> dict[str, Any]:
    """Each attempt, newest first: the event (id and type), the HTTP status, the time taken,
    the error and the next retry. Page with `cursor`."""
    return await webhooks.list_deliveries(db, caller, webhook_id, query.limit, query.cursor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    name="webhooks.deliveries.retry",
    summary="Send a delivery's event again",
    status_code=202,
    response_model=QueuedOut,
    responses=errors(
        CALLER,
        BAD_WEBHOOK_ID,
        WEBHOOK_NOT_FOUND,
        NotFound("delivery not found"),
        DISABLED,
    ),
)
async def retry_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Queue the delivery's event to this endpoint again, with the same `webhook-id` (the body
    shows the user as they are now)."""
    event_id = await webhooks.retry_delivery(db, origin, caller, webhook_id, delivery_id)
    return {"status": "queued", "event_id": event_id}
