"""Request and response models of the admin power tools: impersonation and stats."""

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.api.schemas import EXAMPLE_ID, AppRef, EnvRef, Keywords, example
from app.ids import Prefix
from app.services import users
from app.services.impersonation import REASON_MAX_LENGTH
from app.services.stats import DAYS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Blank is spaces, tabs and line breaks only — the same characters in the JSON Schema pattern
# below, so the published schema and the server agree on every string.
_BLANK = " \t\n\r"


def _not_blank(value: str) -> str:
    if not value.strip(_BLANK):
        raise ValueError("must not be blank")
    return value.strip(_BLANK)


class ImpersonateIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "ticket #4711: page is blank"}]}
    )

    reason: Annotated[
        str,
        StringConstraints(min_length=1, max_length=REASON_MAX_LENGTH),
        AfterValidator(users.reject_nul),
        AfterValidator(_not_blank),
        # Not blank, no NUL: JSON Schema's pattern for what the validators above enforce.
        Keywords(pattern="^[^\\u0000]*[^ \\t\\n\\r\\u0000][^\\u0000]*$"),
    ] = Field(description="why: kept in the audit trail (required, not blank)")


class ImpersonationOut(BaseModel):
    model_config = example(
        {"session_token": "ukst_" + "A" * 43, "expires_at": "2025-01-15T10:30:12.483912Z"}
    )

    session_token: str = Field(
        description="a session of the user, flagged as impersonated: no refresh token; end it "
        "with `POST /v1/auth/signout`"
    )
    expires_at: datetime = Field(description="at most 1 h after the start")


class StatsQuery(Strict):
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")
    env_id: EnvRef | None = Field(default=None, description="default: the app's default env")


class UserTotals(BaseModel):
    total: int = Field(description="users not deleted")
    verified: int = Field(description="of those, with a verified e-mail address")
    banned: int = Field(description="of those, banned now (an expired ban is not counted)")
    deleted: int = Field(description="soft-deleted, not yet purged")


class SignupDay(BaseModel):
    date: date
    count: int


class ActiveUsers(BaseModel):
    day: int = Field(description="users whose sessions were used today (UTC)")
    week: int = Field(description="… today or in the 6 days before")
    month: int = Field(description="… today or in the 29 days before")


class StatsOut(BaseModel):
    model_config = example(
        {
            "app_id": EXAMPLE_ID[Prefix.APP],
            "env_id": EXAMPLE_ID[Prefix.ENV],
            "users": {"total": 1200, "verified": 1100, "banned": 3, "deleted": 12},
            "signups_per_day": [{"date": "2025-01-15", "count": 42}],
            "active_users": {"day": 310, "week": 640, "month": 900},
            "as_of": "2025-01-15T10:30:12.483912Z",
        }
    )

    app_id: str
    env_id: str
    users: UserTotals
    signups_per_day: list[SignupDay] = Field(
        description=f"the last {DAYS} UTC days, oldest first, today last; days without "
        "sign-ups included (0). Counts accounts created that day, later deleted ones too"
    )
    active_users: ActiveUsers = Field(
        description="distinct users who used a session (an impersonation session excepted), "
        "by UTC day"
    )
    as_of: datetime
