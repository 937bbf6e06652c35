"""Request and response models of /v1/admin/webhooks, with examples for /docs.

Each request type states in its schema exactly what its validator accepts (fuzz/ holds them to
it): the URL by one pattern, the event names by the catalog's enum.
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StringConstraints,
)

from app.api.admin_schemas import Cursor
from app.api.schemas import EXAMPLE_ID, NO_NUL, AppRef, Keywords, Strict, example, typeid
from app.ids import Prefix, checker
from app.services import users, webhooks

_PORT = (
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
    r"|[1-9][0-9]{0,3}))?"
)
# http(s), a host name or IPv4 address, an optional port, then path and query (no fragment, no
# user:password@, no spaces).
WEBHOOK_URL_PATTERN = (
    r"^https?://(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}"
    + _PORT
    + r"(?:[/?][A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"
)
_URL = re.compile(WEBHOOK_URL_PATTERN)
URL_EXAMPLE = "https://hooks.acme.com/userkeep"


def _check_url(value: str) -> str:
    if _URL.fullmatch(value):
        return value
    scheme, _, rest = value.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if scheme.lower() not in {"http", "https"} or not rest:
        raise ValueError("must be an http or https URL: " + URL_EXAMPLE)
    if "@" in authority:
        raise ValueError("must not carry credentials (user:password@); the signature authenticates")
    if "#" in rest:
        raise ValueError("must not have a fragment (#…)")
    raise ValueError("must be an http(s) URL with a host name or IPv4 address: " + URL_EXAMPLE)


WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=2048),
    AfterValidator(_check_url),
    Keywords(
        pattern=WEBHOOK_URL_PATTERN,
        examples=[URL_EXAMPLE],
        description="where events are POSTed; resolved at each delivery, and refused when it "
        "resolves to a loopback, private or link-local address (unless WEBHOOK_ALLOW_PRIVATE)",
    ),
]


def _check_event(value: str) -> str:
    if value not in webhooks.SUBSCRIBABLE:
        raise ValueError(
            f"unknown event type {value!r}; GET /v1/admin/webhooks/event-types lists them"
        )
    return value


EventName = Annotated[
    str,
    AfterValidator(_check_event),
    Keywords(enum=list(webhooks.SUBSCRIBABLE)),
]
Events = Annotated[
    list[EventName],
    Field(min_length=1, max_length=64, description="the event types to send (duplicates merge)"),
]
Description = Annotated[
    str,
    StringConstraints(max_length=500),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL),
]
WebhookId = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(checker(Prefix.WEBHOOK)),
    typeid(Prefix.WEBHOOK),
]  # fmt: skip
DeliveryId = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(checker(Prefix.WEBHOOK_DELIVERY)),
    typeid(Prefix.WEBHOOK_DELIVERY),
]  # fmt: skip


class WebhookIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"url": URL_EXAMPLE, "events": ["user.created", "user.deleted"]},
            ]
        },
    )

    url: WebhookUrl
    events: Events
    description: Description = ""
    enabled: StrictBool = True
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")


class WebhookPatch(Strict):
    """Absent fields stay unchanged; `enabled: true` also clears `disabled_reason`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": True}]})

    # Not nullable: the defaults are never validated, only absent.
    url: WebhookUrl = None  # type: ignore[assignment]
    events: Events = None  # type: ignore[assignment]
    description: Description = None  # type: ignore[assignment]
    enabled: StrictBool = None  # type: ignore[assignment]

    def changes(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.model_fields_set}


class WebhookListQuery(Strict):
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")


class DeliveryQuery(Strict):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Cursor | None = Field(default=None, description="`next_cursor` of the previous page")


WEBHOOK_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.WEBHOOK],
    "app_id": EXAMPLE_ID[Prefix.APP],
    "url": URL_EXAMPLE,
    "description": "CRM sync",
    "events": ["user.created", "user.deleted"],
    "enabled": True,
    "disabled_reason": None,
    "failing_since": None,
    "previous_secret_expires_at": None,
    "created_at": "2025-01-16T08:00:00Z",
    "updated_at": "2025-01-16T08:00:00Z",
}
SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw2Ku/J0DFx8E="  # noqa: S105 - made up


class WebhookOut(BaseModel):
    model_config = example(WEBHOOK_EXAMPLE)

    id: str
    app_id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = Field(description="why it was disabled automatically")
    failing_since: datetime | None = Field(
        description="first failure since the last success; 5 days of it disable the webhook"
    )
    previous_secret_expires_at: datetime | None = Field(
        description="until when the secret before the last rotation still signs"
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreatedOut(WebhookOut):
    model_config = example({**WEBHOOK_EXAMPLE, "secret": SECRET_EXAMPLE})

    secret: str = Field(description="the signing secret, shown in this answer only")


class WebhooksOut(BaseModel):
    model_config = example({"webhooks": [WEBHOOK_EXAMPLE]})

    webhooks: list[WebhookOut]


class EventTypeOut(BaseModel):
    type: str
    description: str
    example: dict[str, JsonValue] = Field(description="a body as delivered")


class EventTypesOut(BaseModel):
    model_config = example({"event_types": cast(list[JsonValue], webhooks.event_types()[:1])})

    event_types: list[EventTypeOut]


DELIVERY_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.WEBHOOK_DELIVERY],
    "webhook_id": EXAMPLE_ID[Prefix.WEBHOOK],
    "event_id": EXAMPLE_ID[Prefix.AUDIT],
    "event_type": "user.created",
    "attempt": 1,
    "status": "failed",
    "http_status": 503,
    "duration_ms": 84,
    "error": "HTTP 503",
    "response_body": "upstream unavailable",
    "next_retry_at": "2025-01-15T09:30:06Z",
    "created_at": "2025-01-15T09:30:01Z",
}


class DeliveryOut(BaseModel):
    model_config = example(DELIVERY_EXAMPLE)

    id: str
    webhook_id: str
    event_id: str = Field(description="the audit event's id, sent as `webhook-id`")
    event_type: str
    attempt: int
    status: Literal["succeeded", "failed", "pending"]
    http_status: int | None
    duration_ms: int | None
    error: str | None
    response_body: str | None = Field(description="the first 4 KiB of the answer")
    next_retry_at: datetime | None = Field(description="when the next attempt runs, if any")
    created_at: datetime


class DeliveriesOut(BaseModel):
    model_config = example({"deliveries": [DELIVERY_EXAMPLE], "limit": 20, "next_cursor": None})

    deliveries: list[DeliveryOut] = Field(description="newest first")
    limit: int
    next_cursor: str | None


class QueuedOut(BaseModel):
    model_config = example({"status": "queued", "event_id": EXAMPLE_ID[Prefix.AUDIT]})

    status: Literal["queued"]
    event_id: str = Field(description="the `webhook-id` the delivery carries")
