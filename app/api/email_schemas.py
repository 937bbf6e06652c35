"""Request and response models of the e-mail flows (verification, reset, e-mail change)."""

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from app.api.schemas import (
    NO_NUL,
    USER_EXAMPLE,
    AppRef,
    Email,
    EnvRef,
    Keywords,
    NewPassword,
    Password,
    TokensOut,
    UserOut,
    example,
    trimmed,
)
from app.services import users
from app.services.email_flows import Presented

CODE_RE = re.compile(r"[0-9]{6}")


def clean_code(value: str) -> str:
    value = value.strip()
    if not CODE_RE.fullmatch(value):
        raise ValueError("must be the 6 digits of the mail")
    return value


# The 6-digit code of a mail; spaces around it (a paste) are trimmed.
Code = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(clean_code),
    Keywords(pattern=trimmed("[0-9]{6}"), examples=["402913"]),
]
# The token of a mail's link (its `token=` parameter).
LinkToken = Annotated[
    str,
    Field(min_length=1, max_length=256),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL, examples=["ukev_Qm8y2Xr0bJ1kq6iY3nA5vLw7cT9pE4sH0dF2gK8uZ1o"]),
]


def _string(name: str) -> dict[str, JsonValue]:
    return {"required": [name], "properties": {name: {"type": "string"}}}


def _token_or_code(with_email: bool) -> dict[str, JsonValue]:
    """Exactly one of `token` and `code` (`null` counts as absent); with `with_email`, `email`
    comes exactly with `code`. Said with `not` and `dependentSchemas` rather than oneOf, which
    ReDoc merges into a confusing object (see schemas.ONE_IDENTIFIER)."""
    schema: dict[str, JsonValue] = {
        "not": {
            "anyOf": [
                {
                    "required": ["token", "code"],
                    "properties": {"token": {"type": "string"}, "code": {"type": "string"}},
                },
                {"properties": {"token": {"type": "null"}, "code": {"type": "null"}}},
            ]
        }
    }
    if with_email:
        schema["dependentSchemas"] = {
            "code": {"if": _string("code"), "then": _string("email")},
            "email": {"if": _string("email"), "then": _string("code")},
        }
    return schema


class _Presenting(BaseModel):
    """A body presenting a link token, or a code (with the address it was sent to)."""

    token: LinkToken | None = Field(default=None, description="the `token` of the mail's link")
    code: Code | None = Field(default=None, description="the 6-digit code of the mail")
    email: Email | None = Field(
        default=None, description="the address the code was sent to; only with `code`"
    )
    app_id: AppRef | None = Field(default=None, description="app slug or aapp_ id; default app")
    env_id: EnvRef | None = Field(
        default=None, description="environment slug or aenv_ id; the app's default"
    )

    @model_validator(mode="after")
    def token_or_code(self) -> Any:
        if (self.token is None) == (self.code is None):
            raise ValueError("give exactly one of token or code")
        if (self.code is None) != (self.email is None):
            raise ValueError("give email with code, and only with code")
        return self

    def presented(self, tenant: dict[str, str]) -> Presented:
        """What the body presents; its app/env, else those of the X-App-ID/X-Env-ID headers."""
        return Presented(
            token=self.token,
            code=self.code,
            email=self.email,
            app_ref=self.app_id or tenant.get("app_id"),
            env_ref=self.env_id or tenant.get("env_id"),
        )


class VerifyEmailIn(_Presenting):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"token": "ukev_Qm8y2Xr0bJ1kq6iY3nA5vLw7cT9pE4sH0dF2gK8uZ1o"},
                {"email": "ada@example.com", "code": "402913"},
            ],
            **_token_or_code(with_email=True),
        },
    )


class ResetPasswordIn(_Presenting):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "token": "ukpr_Xr0bJ1kq6iY3nA5vLw7cT9pE4sH0dF2gK8uZ1oQm8y2",
                    "new_password": "a new long passphrase",
                },
                {
                    "email": "ada@example.com",
                    "code": "402913",
                    "new_password": "a new long passphrase",
                },
            ],
            **_token_or_code(with_email=True),
        },
    )

    new_password: NewPassword


class AddressIn(BaseModel):
    """An address to send a mail to, in an app environment (the default one when absent)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "ada@example.com"}]}
    )

    email: Email
    app_id: AppRef | None = Field(default=None, description="app slug or aapp_ id; default app")
    env_id: EnvRef | None = Field(
        default=None, description="environment slug or aenv_ id; the app's default"
    )


class VerifySendIn(BaseModel):
    """`email` (signed out), or nothing with a bearer token (the caller's own address)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "ada@example.com"}, {}]},
    )

    email: Email | None = Field(default=None, description="without a bearer token: required")
    app_id: AppRef | None = Field(default=None, description="app slug or aapp_ id; default app")
    env_id: EnvRef | None = Field(
        default=None, description="environment slug or aenv_ id; the app's default"
    )


class ChangeEmailIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"new_email": "ada.king@example.com", "password": "correct horse battery staple"}
            ]
        },
    )

    new_email: Email
    password: Password


class ConfirmEmailChangeIn(BaseModel):
    """`token` from the link (no bearer needed), or `code` with the bearer token of the user
    who asked for the change."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"token": "ukec_bJ1kq6iY3nA5vLw7cT9pE4sH0dF2gK8uZ1oQm8y2Xr0"},
                {"code": "402913"},
            ],
            **_token_or_code(with_email=False),
        },
    )

    token: LinkToken | None = Field(default=None, description="the `token` of the mail's link")
    code: Code | None = Field(default=None, description="the 6-digit code; needs the bearer")

    @model_validator(mode="after")
    def token_or_code(self) -> Any:
        if (self.token is None) == (self.code is None):
            raise ValueError("give exactly one of token or code")
        return self


class VerifiedOut(BaseModel):
    """The verified user; where the app requires verification, also a first session."""

    model_config = example({"status": "email verified", "user": USER_EXAMPLE})

    status: str
    user: UserOut
    session_token: str | None = Field(
        default=None, description="only where the app requires a verified address to sign in"
    )
    refresh_token: str | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None


class SignupPendingOut(BaseModel):
    """Sign-up where the app requires verification: the user, no session until verified."""

    model_config = example({"user": {**USER_EXAMPLE, "email_verified": False}})

    user: UserOut


SignupOut = TokensOut | SignupPendingOut
