"""Request and response models of /v1/admin, with examples for /docs.

Request and query models forbid unknown fields (422); every id goes through ids.checker; the
user fields reuse the types (and so the rules) of api/schemas.py.
"""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StringConstraints,
)

from app.api.schemas import (
    AUDIT_EVENT_EXAMPLE,
    CLEARED_USERNAME,
    EXAMPLE_ID,
    NO_NUL,
    SESSION_EXAMPLE,
    SLUG_PATTERN,
    SPACE,
    USER_EXAMPLE,
    AppRef,
    AuditEventOut,
    Email,
    EnvRef,
    Image,
    Keywords,
    Metadata,
    Name,
    NewPassword,
    Phone,
    ProfilePatch,
    SessionOut,
    UserId,
    Username,
    UserOut,
    example,
    typeid_pattern,
)
from app.errors import ValidationFailed
from app.ids import Prefix, checker, is_valid
from app.services import apps, users
from app.settings import check_link_base, check_mail_from

MAX_OFFSET = 10_000_000
MAX_BAN_SECONDS = 100 * 365 * 86400


# RFC 3339 date-time (JSON Schema's `date-time`): pydantic alone would also take Unix seconds
# ("0", 1700000000), a space for the `T`, or no seconds.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T00:00:00Z")
    return value


def _json_integer(value: object) -> object:
    """A JSON integer: 3600 or 3600.0, not "3600" or true (which pydantic's lax int takes)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    return value


# The bounds go before the validator: after it, pydantic would print them as "ge"/"le".
BanSeconds = Annotated[int, Field(ge=1, le=MAX_BAN_SECONDS), BeforeValidator(_json_integer)]


def _utc(value: datetime) -> datetime:
    """An RFC 3339 instant, normalised to UTC; one outside what UTC can hold is bad input."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


def _actor_id(value: str) -> str:
    if not (is_valid(value, Prefix.USER) or is_valid(value, Prefix.API_KEY)):
        raise ValueError("must be a TypeID with prefix ausr_ or akey_")
    return value


Slug = Annotated[
    str,
    StringConstraints(max_length=63),
    AfterValidator(apps.clean_slug),
    Keywords(pattern=SLUG_PATTERN),
]
ApiKeyId = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(checker(Prefix.API_KEY)),
    Keywords(pattern=typeid_pattern(Prefix.API_KEY)),
]
ActorId = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_actor_id),
    Keywords(pattern=typeid_pattern(Prefix.USER, Prefix.API_KEY)),
]
Role = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$"),
    Field(description="`user`, `admin`, or a role of your own", examples=["admin"]),
]
SearchText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL),
]


def _label(value: str) -> str:
    value = users.reject_nul(value.strip())
    if not value:
        raise ValueError("must not be empty or only white space")
    return value


# At most 256 characters as sent; trimmed, something must remain.
Label = Annotated[
    str,
    StringConstraints(max_length=256),
    AfterValidator(_label),
    Keywords(
        pattern=rf"^[{SPACE}]*[^{SPACE}\u0000][^\u0000]*$",
        description="surrounding white space is trimmed; something must remain",
    ),
]
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_utc)]
Cursor = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    Keywords(pattern="^[A-Za-z0-9_-]+$", description="a `next_cursor`, as returned"),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- users -------------------------------------------------------------------------------


class UserListQuery(Strict):
    """Filters of `GET /v1/admin/users`. Text filters are case-insensitive partial matches in
    which `%` and `_` mean themselves."""

    app_id: AppRef | None = Field(
        default=None, description="app slug or aapp_ id (default: the caller's app)"
    )
    env_id: EnvRef | None = Field(default=None, description="only this environment")
    email: SearchText | None = Field(default=None, description="part of the e-mail address")
    username: SearchText | None = Field(default=None, description="part of the username")
    phone: SearchText | None = Field(default=None, description="part of the phone number")
    search: SearchText | None = Field(
        default=None, description="part of the e-mail, username, name or phone"
    )
    banned: bool | None = Field(
        default=None, description="effective ban state (an expired ban is not banned)"
    )
    email_verified: bool | None = None
    role: Role | None = None
    include_deleted: bool = Field(default=False, description="include soft-deleted users")
    created_after: Instant | None = Field(
        default=None, description="created at or after (RFC 3339)"
    )
    created_before: Instant | None = Field(default=None, description="created before (RFC 3339)")
    sort_by: Literal["created_at", "updated_at", "email", "name", "username"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    cursor: Cursor | None = Field(
        default=None,
        description="`next_cursor` of the previous page (same sort); not with offset",
    )
    count: Literal["capped", "exact"] = Field(
        default="capped",
        description="`capped`: count matches up to ADMIN_COUNT_LIMIT (1,000 by default), "
        "so a broad filter stays fast; `exact`: count them all, however many",
    )


class IncludeDeleted(Strict):
    include_deleted: bool = Field(default=False, description="also find a soft-deleted user")


class AdminUserCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "grace@example.com",
                    "email_verified": True,
                    "name": "Grace Hopper",
                    "username": "grace",
                    "role": "user",
                }
            ],
            # A verified phone needs a phone (admin._set_phone_verified).
            "if": {
                "properties": {"phone_verified": {"const": True}},
                "required": ["phone_verified"],
            },
            "then": {"properties": {"phone": {"type": "string"}}, "required": ["phone"]},
        },
    )

    email: Email
    password: NewPassword | None = Field(
        default=None, description="optional: without one, the user cannot sign in yet"
    )
    email_verified: StrictBool = False
    phone_verified: StrictBool = False
    role: Role = "user"
    name: Name | None = None
    username: Username | None = None
    phone: Phone | None = None
    image: Image | None = None
    metadata: Metadata | None = None
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")
    env_id: EnvRef | None = Field(default=None, description="default: the app's default env")


NOT_NULL = ("email", "email_verified", "phone_verified", "role")


def _patch_schema(schema: dict[str, Any]) -> None:
    """May be absent, may not be null: what AdminUserPatch.changes() enforces."""
    schema["examples"] = [
        {"email": "grace.hopper@example.com", "email_verified": True, "role": "admin"}
    ]
    # Verifying the phone while clearing it is refused; with `phone` absent it depends on the
    # stored number (422 when there is none), as does `display_username` (the stored username).
    schema["if"] = {
        "properties": {"phone_verified": {"const": True}},
        "required": ["phone_verified", "phone"],
    }
    schema["then"] = {"properties": {"phone": {"type": "string"}}}
    schema["dependentSchemas"] = CLEARED_USERNAME
    for name in NOT_NULL:
        field = schema["properties"][name]
        (kept,) = [branch for branch in field.pop("anyOf") if branch.get("type") != "null"]
        field.pop("default", None)
        field.update(kept)


class AdminUserPatch(ProfilePatch):
    """The profile fields of a self-service PATCH, plus what only an admin changes. Absent
    fields stay unchanged; `null` clears name, username, image or phone. A new e-mail address
    is unverified unless `email_verified` comes with it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_patch_schema)

    email: Email | None = None
    email_verified: StrictBool | None = None
    phone_verified: StrictBool | None = None
    role: Role | None = None

    def changes(self) -> dict[str, Any]:
        """The given fields; `null` is refused for the ones that cannot be empty."""
        changes = super().changes()
        for field in NOT_NULL:
            if field in changes and changes[field] is None:
                raise ValidationFailed(field, "must not be null")
        return changes


class BanIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"reason": "spam", "expires_in": 3600}],
            # Not both (admin.ban refuses that); each alone, or neither for a ban until unbanned.
            "not": {
                "required": ["expires_at", "expires_in"],
                "properties": {"expires_at": {"type": "string"}, "expires_in": {"type": "integer"}},
            },
        },
    )

    reason: (
        Annotated[
            str,
            StringConstraints(max_length=512),
            AfterValidator(users.reject_nul),
            Keywords(pattern=NO_NUL),
        ]
        | None
    ) = None
    expires_at: Instant | None = Field(
        default=None, description="end of the ban (RFC 3339, in the future)"
    )
    expires_in: BanSeconds | None = Field(default=None, description="length of the ban in seconds")


class PasswordIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"password": "a new long passphrase"}]}
    )

    password: NewPassword


class PurgeIn(Strict):
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")


class UserListOut(BaseModel):
    model_config = example(
        {
            "users": [USER_EXAMPLE],
            "total": 1,
            "total_exact": True,
            "limit": 20,
            "offset": 0,
            "next_cursor": None,
        }
    )

    users: list[UserOut]
    total: int = Field(
        description="how many users match the filters, over all pages; when `total_exact` "
        "is false, at least this many (the count stopped at ADMIN_COUNT_LIMIT)"
    )
    total_exact: bool = Field(
        description="false when more users match than the count limit; `count=exact` "
        "gives the true number"
    )
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class AdminSessionsOut(BaseModel):
    model_config = example({"sessions": [{**SESSION_EXAMPLE, "current": False}]})

    sessions: list[SessionOut] = Field(description="live sessions; `current` marks the caller's")


class RevokedOut(BaseModel):
    model_config = example({"status": "revoked", "revoked": 2})

    status: str
    revoked: int = Field(description="how many live sessions were revoked")


class PurgeOut(BaseModel):
    model_config = example({"purged": 1})

    purged: int = Field(description="how many users were erased")


# ---- audit ---------------------------------------------------------------------------------


class AuditQuery(Strict):
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")
    action: Annotated[str, StringConstraints(pattern=r"^[a-z_.]{1,64}$")] | None = Field(
        default=None, examples=["user.banned"]
    )
    actor_type: Literal["user", "admin", "api_key", "system", "faroe"] | None = None
    actor_id: ActorId | None = Field(default=None, description="an ausr_ or akey_ id")
    target_user_id: UserId | None = None
    created_after: Instant | None = None
    created_before: Instant | None = None
    limit: int = Field(default=50, ge=1, le=100)
    cursor: Cursor | None = Field(default=None, description="`next_cursor` of the previous page")


class AuditEventsOut(BaseModel):
    model_config = example(
        {"audit_events": [AUDIT_EVENT_EXAMPLE], "limit": 50, "next_cursor": None}
    )

    audit_events: list[AuditEventOut] = Field(description="newest first")
    limit: int
    next_cursor: str | None


# ---- apps and environments -----------------------------------------------------------------


# The API takes a plainer From: and link base than the settings do, so that the schema can say
# exactly what is accepted: a display name of words, an ASCII address; an http(s) URL with a
# host name (no IPv6 literal, no user info), no query or fragment.
_ADDRESS = (
    r"[A-Za-z0-9_%+-]{1,64}(?:\.[A-Za-z0-9_%+-]{1,64}){0,8}"
    r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
MAIL_FROM_PATTERN = (
    rf"^(?:[A-Za-z0-9_'-]{{1,32}}(?: [A-Za-z0-9_'-]{{1,32}}){{0,7}} <{_ADDRESS}>|{_ADDRESS})$"
)
LINK_BASE_PATTERN = (
    r"^https?://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
)


def _pattern_then(pattern: str, problem: str, check: Callable[[str], str]) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def validate(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(problem)
        return check(value)

    return validate


MailFrom = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(
        _pattern_then(
            MAIL_FROM_PATTERN,
            "must be an address, or a name and an address: Acme <no-reply@acme.com>",
            check_mail_from,
        )
    ),
    Keywords(
        pattern=MAIL_FROM_PATTERN,
        examples=["Acme <no-reply@acme.com>"],
        description="the From: of the app's mails, `Name <address>` or an address; null = "
        "MAIL_FROM",
    ),
]
LinkBaseUrl = Annotated[
    str,
    StringConstraints(max_length=2048),
    AfterValidator(
        _pattern_then(
            LINK_BASE_PATTERN,
            "must be an http(s) URL with a host name, no query or fragment: "
            "https://acme.com/account",
            check_link_base,
        )
    ),
    Keywords(
        pattern=LINK_BASE_PATTERN,
        examples=["https://acme.com/account"],
        description="where the links of the app's mails point (…/verify-email?token=…, "
        "…/reset-password?token=…, …/confirm-email-change?token=…); null = PUBLIC_URL",
    ),
]


class AppMail(Strict):
    mail_from: MailFrom | None = None
    link_base_url: LinkBaseUrl | None = None
    require_email_verification: StrictBool | None = Field(
        default=None,
        description="sign-in needs a verified address; null = REQUIRE_EMAIL_VERIFICATION",
    )

    def mail_settings(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in apps.MAIL_SETTINGS}


class AppIn(AppMail):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"slug": "acme", "name": "Acme Inc."}]}
    )

    slug: Slug
    name: Label


class AppPatch(AppMail):
    """Absent fields stay unchanged; `null` returns a mail setting to the service's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"mail_from": "Acme <no-reply@acme.com>", "require_email_verification": True}
            ]
        },
    )

    # Not nullable: an app always has a name (the default is never validated, only absent).
    name: Label = None  # type: ignore[assignment]

    def changes(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.model_fields_set}


class EnvironmentIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"slug": "staging", "name": "Staging"}]},
    )

    slug: Slug
    name: Label
    is_default: StrictBool = Field(
        default=False, description="make it the app's default environment"
    )


ENVIRONMENT_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.ENV],
    "app_id": EXAMPLE_ID[Prefix.APP],
    "slug": "production",
    "name": "Production",
    "is_default": True,
    "created_at": "2024-12-06T14:02:41.297530Z",
}
APP_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.APP],
    "slug": "acme",
    "name": "Acme Inc.",
    "mail_from": "Acme <no-reply@acme.com>",
    "link_base_url": "https://acme.com/account",
    "require_email_verification": True,
    "created_at": ENVIRONMENT_EXAMPLE["created_at"],
    "environments": [ENVIRONMENT_EXAMPLE],
}


class EnvironmentOut(BaseModel):
    model_config = example(ENVIRONMENT_EXAMPLE)

    id: str
    app_id: str
    slug: str
    name: str
    is_default: bool
    created_at: datetime


class EnvironmentsOut(BaseModel):
    model_config = example({"environments": [ENVIRONMENT_EXAMPLE]})

    environments: list[EnvironmentOut]


class AppOut(BaseModel):
    model_config = example(APP_EXAMPLE)

    id: str
    slug: str
    name: str
    mail_from: str | None
    link_base_url: str | None
    require_email_verification: bool | None
    created_at: datetime
    environments: list[EnvironmentOut]


class AppsOut(BaseModel):
    model_config = example({"apps": [APP_EXAMPLE]})

    apps: list[AppOut]


# ---- API keys ------------------------------------------------------------------------------


class ApiKeyIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "billing sync"}]}
    )

    name: Label
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")


# The secret of the key below, which its prefix and last4 show the ends of.
API_KEY_SECRET = "ask_XcXUAEVbXwGf1TTtGTxp7S3_kIKO28p95lWUnrpLUxQ"  # noqa: S105 - made up, for /docs
API_KEY_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.API_KEY],
    "app_id": EXAMPLE_ID[Prefix.APP],
    "name": "billing sync",
    "prefix": API_KEY_SECRET[:8],
    "last4": API_KEY_SECRET[-4:],
    "created_at": "2025-01-17T16:20:05.730164Z",
    "created_by": EXAMPLE_ID[Prefix.USER],
    "last_used_at": None,
    "revoked_at": None,
}


class ApiKeyOut(BaseModel):
    model_config = example(API_KEY_EXAMPLE)

    id: str
    app_id: str
    name: str
    prefix: str = Field(description="the first characters of the secret")
    last4: str = Field(description="the last 4 characters of the secret")
    created_at: datetime
    created_by: str | None = Field(description="the admin who created it")
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    model_config = example({**API_KEY_EXAMPLE, "secret": API_KEY_SECRET})

    secret: str = Field(
        description="`Authorization: Bearer <secret>`; shown only now, store it safely"
    )


class ApiKeysOut(BaseModel):
    model_config = example({"api_keys": [API_KEY_EXAMPLE]})

    api_keys: list[ApiKeyOut] = Field(description="newest first, revoked ones included")


# ---- jobs ----------------------------------------------------------------------------------

JOB_EXAMPLE: dict[str, JsonValue] = {
    "id": 42,
    "app_id": EXAMPLE_ID[Prefix.APP],
    "kind": "mail.verify_email",
    "status": "failed",
    "attempts": 8,
    "max_attempts": 8,
    "last_error": "SMTPConnectError: (421, 'Service not available')",
    "summary": {},
    "created_at": "2026-12-06T10:00:00Z",
    "updated_at": "2026-12-06T12:07:30Z",
    "started_at": "2026-12-06T12:07:29Z",
    "finished_at": "2026-12-06T12:07:30Z",
    "run_after": None,
}


class JobQuery(Strict):
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")
    status: Literal["queued", "running", "succeeded", "failed", "canceled"] | None = None
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.]{1,64}$")] | None = Field(
        default=None, examples=["mail.verify_email"]
    )
    limit: int = Field(default=50, ge=1, le=100)
    cursor: Cursor | None = Field(default=None, description="`next_cursor` of the previous page")


class JobOut(BaseModel):
    model_config = example(JOB_EXAMPLE)

    id: int
    app_id: str = Field(description="the app of the change that caused the job")
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    attempts: int = Field(description="runs started so far (a retry by hand adds more)")
    max_attempts: int | None = Field(description="runs before the job fails; null: kind unknown")
    last_error: str | None
    summary: dict[str, JsonValue] = Field(
        description="the payload's keys its kind marks safe to show (never a code or a token)"
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_after: datetime | None = Field(description="when a queued job runs (next)")


class JobsOut(BaseModel):
    model_config = example({"jobs": [JOB_EXAMPLE], "limit": 50, "next_cursor": None})

    jobs: list[JobOut] = Field(description="newest first")
    limit: int
    next_cursor: str | None
