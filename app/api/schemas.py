"""Request and response models: the shapes of DESIGN.md, with examples for /docs.

Request models forbid unknown fields (422) and run the field rules of services/users.py.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.ids import Prefix, checker
from app.security.passwords import common_passwords
from app.services import apps, users


class Keywords:
    """JSON Schema keywords for a type whose rules live in a validator: what /docs shows and
    what a client or fuzzer may rely on, enforced by the validator next to it (they must agree:
    fuzz/ checks that every value the schema allows is accepted and every other one refused)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema


# No U+0000 anywhere: PostgreSQL text and jsonb cannot hold it (users.reject_nul, which also
# refuses unpaired surrogates; those are not Unicode text, so no JSON Schema string has them).
NO_NUL = "^[^\\u0000]*$"
# What str.strip() trims (the fields below are trimmed before their rules apply), spelled out:
# `\s` means something else in each regex dialect (ECMA 262's has U+FEFF, not U+001C-U+001F).
SPACE = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def trimmed(core: str) -> str:
    """A pattern for `core` with the white space str.strip() removes around it."""
    return f"^[{SPACE}]*{core}[{SPACE}]*$"


def typeid_pattern(*prefixes: Prefix) -> str:
    """A TypeID: the prefix, '_', then 26 Crockford base32 characters, the first at most 7."""
    names = "|".join(prefix.value for prefix in prefixes)
    return f"^(?:{names})_[0-7][0-9a-hjkmnp-tv-z]{{25}}$"


# Well-formed ids of one made-up account (signed up 2025-01-15 09:30 UTC), for the examples.
EXAMPLE_ID = {
    Prefix.USER: "ausr_01jhmms3m3ebsacsd61g9d528r",
    Prefix.APP: "aapp_01jedmwbm3fparxt416r4hcvvb",
    Prefix.ENV: "aenv_01jedmwbm6e4ysf3bc1z9s07zj",
    Prefix.SESSION: "ases_01jhmmty73f6gt15fj1y9sas8c",
    Prefix.FAMILY: "asfm_01jhmmty73f4w8q3pv4956p94a",
    Prefix.API_KEY: "akey_01jhssjhm3ft98x3ygnrq1n54j",
    Prefix.AUDIT: "aevt_01jhmms4kbecr9y64cpr8903wy",
    Prefix.WEBHOOK: "awhk_01jhst2a9ef0hbx0n8k6wq3m7d",
    Prefix.WEBHOOK_DELIVERY: "awdl_01jhmms5c2e6ksv1yq8tm4x0bz",
    Prefix.MFA_ENROLLMENT: "amfa_01jhmn2f6reb4t8q0c3vw5x9ka",
}


def typeid(prefix: Prefix) -> Any:
    return Keywords(pattern=typeid_pattern(prefix), examples=[EXAMPLE_ID[prefix]])


Email = Annotated[
    str,
    StringConstraints(max_length=users.MAX_EMAIL),
    AfterValidator(users.clean_email),
    Keywords(
        format="email",
        description="surrounding spaces are trimmed; special-use domains (.test, .local, "
        ".localhost, .invalid, .onion, .arpa) are refused",
    ),
]
Username = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(users.clean_username),
    Keywords(
        pattern=trimmed("[A-Za-z0-9_.-]{3,32}"),
        description="3-32 letters, digits, '_', '.', '-' (trimmed); stored lower-cased; "
        "reserved names "
        f"({', '.join(sorted(users.RESERVED_USERNAMES)[:6])}, …) are refused",
    ),
]
Phone = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(users.clean_phone),
    Keywords(
        pattern=trimmed("\\+[1-9][0-9]{6,14}"),
        description="E.164 (trimmed), and a possible number of its country (libphonenumber)",
        examples=["+14155550123"],
    ),
]
# Lengths count what was sent, spaces included (so maxLength says it exactly).
Name = Annotated[
    str,
    StringConstraints(max_length=users.MAX_NAME),
    AfterValidator(users.clean_name),
    Keywords(pattern=NO_NUL),
]
Image = Annotated[
    str,
    StringConstraints(max_length=users.MAX_IMAGE),
    AfterValidator(users.clean_image),
    Keywords(
        pattern=f"^[{SPACE}]*https?://[^\\u0000]*$",
        examples=["https://example.com/ada.png"],
    ),
]
Metadata = Annotated[
    dict[str, str],
    AfterValidator(users.clean_metadata),
    Keywords(
        maxProperties=users.METADATA_MAX_KEYS,
        propertyNames={"minLength": 1, "maxLength": users.METADATA_MAX_KEY, "pattern": NO_NUL},
        additionalProperties={
            "type": "string",
            "maxLength": users.METADATA_MAX_VALUE,
            "pattern": NO_NUL,
        },
    ),
]
# What a sign-in is looked up by: any text (an unknown account is a 401, not a 422).
SigninEmail = Annotated[
    str,
    StringConstraints(min_length=1, max_length=320),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL),
]
SigninUsername = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL),
]
# A password as typed to sign in (or as the current password): checked against the hash only.
Password = Annotated[str, StringConstraints(max_length=4096)]
# A new password: the policy of security/passwords.check_policy (the length bounds are the
# defaults; PASSWORD_MIN_LENGTH may raise the minimum).
NewPassword = Annotated[
    str,
    StringConstraints(max_length=4096),
    Keywords(
        minLength=8,
        maxLength=128,
        description="8-128 characters (PASSWORD_MIN_LENGTH may ask for more), not one of the "
        f"{len(common_passwords())} most common passwords (case-insensitive)",
    ),
]
SLUG_PATTERN = "^[a-z0-9][a-z0-9-]{1,62}$"  # apps.SLUG_RE


def _ref(prefix: Prefix) -> Callable[[str], str]:
    """A slug or a TypeID with `prefix`: anything with '_' must be a well-formed TypeID
    (slugs never contain '_'), anything else a well-formed slug. So a mistyped or wrong-prefix
    id is a 422 naming the field, never a 404 from looking it up as a slug."""
    check_id = checker(prefix)

    def check(value: str) -> str:
        return check_id(value) if "_" in value else apps.clean_slug(value)

    return check


def _ref_pattern(prefix: Prefix) -> str:
    return f"(?:{typeid_pattern(prefix)})|(?:{SLUG_PATTERN})"


# An app or environment named by a caller, on public and admin routes alike (body, query,
# header).
AppRef = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_ref(Prefix.APP)),
    Field(description="app slug or aapp_ id", examples=["default"]),
    Keywords(pattern=_ref_pattern(Prefix.APP)),
]
EnvRef = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_ref(Prefix.ENV)),
    Field(description="environment slug or aenv_ id", examples=["production"]),
    Keywords(pattern=_ref_pattern(Prefix.ENV)),
]
SessionId = Annotated[str, AfterValidator(checker(Prefix.SESSION)), typeid(Prefix.SESSION)]
UserId = Annotated[str, AfterValidator(checker(Prefix.USER)), typeid(Prefix.USER)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "correct horse battery staple",
                    "name": "Ada Lovelace",
                    "username": "Ada",
                }
            ]
        },
    )

    email: Email
    password: NewPassword
    name: Name | None = None
    username: Username | None = None
    phone: Phone | None = None
    image: Image | None = None
    metadata: Metadata | None = None
    app_id: AppRef | None = Field(default=None, description="app slug or aapp_ id; default app")
    env_id: EnvRef | None = Field(
        default=None, description="environment slug or aenv_ id; the app's default"
    )


# Exactly one of email and username, as SigninIn.one_identifier() checks (`null` counts as
# absent there): neither "both given" nor "neither given". Said with `not` rather than a oneOf
# of two branches, which ReDoc merges into the object (an allOf of clashing property types,
# shown as `object | (object | object)`); ReDoc and Swagger UI leave `not` alone, while JSON
# Schema validators and the fuzzer apply it.
ONE_IDENTIFIER: dict[str, JsonValue] = {
    "not": {
        "anyOf": [
            {
                "required": ["email", "username"],
                "properties": {"email": {"type": "string"}, "username": {"type": "string"}},
            },
            {"properties": {"email": {"type": "null"}, "username": {"type": "null"}}},
        ]
    }
}


class SigninIn(Strict):
    """The password with exactly one of `email` or `username` (both, or neither, is a 422).
    An unknown account and a wrong password get the same 401 `invalid_credentials`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "ada@example.com", "password": "correct horse battery staple"},
                {"username": "ada", "password": "correct horse battery staple"},
            ],
            **ONE_IDENTIFIER,
        },
    )

    email: SigninEmail | None = Field(
        default=None, description="the account's e-mail address, any case; not with username"
    )
    username: SigninUsername | None = Field(
        default=None, description="the account's username, any case; not with email"
    )
    password: Password
    app_id: AppRef | None = Field(default=None, description="app slug or aapp_ id; default app")
    env_id: EnvRef | None = Field(
        default=None, description="environment slug or aenv_ id; the app's default"
    )

    @model_validator(mode="after")
    def one_identifier(self) -> "SigninIn":
        if (self.email is None) == (self.username is None):
            raise ValueError("give exactly one of email or username")
        return self


class RefreshIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"refresh_token": "ukrt_…"}]}
    )

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


# In a profile PATCH, `display_username` re-cases the username: not with `"username": null`.
CLEARED_USERNAME: dict[str, JsonValue] = {
    "username": {
        "if": {"properties": {"username": {"type": "null"}}},
        "then": {"properties": {"display_username": {"type": "null"}}},
    }
}


class ProfilePatch(Strict):
    """Absent fields stay unchanged; `null` clears name, username, image or phone."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "Ada King", "metadata": {"theme": "dark"}}],
            "dependentSchemas": CLEARED_USERNAME,
        },
    )

    name: Name | None = None
    username: Username | None = None
    display_username: Username | None = None
    image: Image | None = None
    phone: Phone | None = None
    metadata: Metadata | None = None

    def changes(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.model_fields_set}


class ChangePasswordIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "correct horse battery staple",
                    "new_password": "a new long passphrase",
                }
            ]
        },
    )

    current_password: Password
    new_password: NewPassword


# ---- answers ---------------------------------------------------------------------------------
# The examples are one made-up account as the API would show it, so /docs reads like real
# traffic (tests/test_openapi.py validates each against its schema).

SIGNED_UP = "2025-01-15T09:30:12.483912Z"
USER_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.USER],
    "app_id": EXAMPLE_ID[Prefix.APP],
    "env_id": EXAMPLE_ID[Prefix.ENV],
    "email": "ada@example.com",
    "email_verified": False,
    "name": "Ada Lovelace",
    "image": None,
    "username": "ada",
    "display_username": "Ada",
    "phone": None,
    "phone_verified": False,
    "role": "user",
    "password_changed_at": SIGNED_UP,
    "banned": False,
    "ban_reason": None,
    "ban_expires": None,
    "metadata": {},
    "created_at": SIGNED_UP,
    "updated_at": SIGNED_UP,
    "deleted_at": None,
    "mfa_enabled": False,
}
SESSION_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.SESSION],
    "family_id": EXAMPLE_ID[Prefix.FAMILY],
    "created_at": SIGNED_UP,
    "expires_at": "2025-01-15T10:30:12.483912Z",
    "refresh_expires_at": "2025-02-14T09:30:12.483912Z",
    "last_used_at": "2025-01-15T09:42:03.118204Z",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "impersonated_by": None,
    "current": True,
}
AUDIT_EVENT_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.AUDIT],
    "action": "user.signup",
    "actor_type": "user",
    "actor_id": EXAMPLE_ID[Prefix.USER],
    "target_user_id": EXAMPLE_ID[Prefix.USER],
    "app_id": EXAMPLE_ID[Prefix.APP],
    "env_id": EXAMPLE_ID[Prefix.ENV],
    "ip": "203.0.113.7",
    "user_agent": SESSION_EXAMPLE["user_agent"],
    "created_at": SIGNED_UP,
    "metadata": {},
}


def example(*examples: JsonValue) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class UserOut(BaseModel):
    model_config = example(USER_EXAMPLE)

    id: str
    app_id: str
    env_id: str
    email: str
    email_verified: bool
    name: str | None
    image: str | None
    username: str | None
    display_username: str | None
    phone: str | None
    phone_verified: bool
    role: str
    password_changed_at: datetime | None
    banned: bool = Field(description="the effective state: false once `ban_expires` has passed")
    ban_reason: str | None
    ban_expires: datetime | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    mfa_enabled: bool = Field(
        description="a second factor is on: sign-in answers `mfa_required` after the password"
    )


class TokensOut(BaseModel):
    model_config = example(
        {
            "user": USER_EXAMPLE,
            "session_token": "ukst_bvNccskM1UO0Pnslivd7BidQHwyocpf87puyJd62n_A",
            "refresh_token": "ukrt_m48jZDHhjm8LkeGd_C8FNapJWTlPcGU8Sg19EexsCL0",
            "expires_at": SESSION_EXAMPLE["expires_at"],
            "refresh_expires_at": SESSION_EXAMPLE["refresh_expires_at"],
        }
    )

    user: UserOut
    session_token: str = Field(description="`ukst_…`: the bearer token of /v1/auth routes")
    refresh_token: str = Field(description="`ukrt_…`: exchange once at /v1/auth/refresh")
    expires_at: datetime = Field(description="when session_token stops working (1 h)")
    refresh_expires_at: datetime = Field(
        description="when refresh_token stops working (30 d, and never past 90 d from the "
        "sign-in however often it is refreshed)"
    )


class StatusOut(BaseModel):
    status: str


class SessionOut(BaseModel):
    model_config = example(SESSION_EXAMPLE)

    id: str
    family_id: str = Field(description="the sign-in the session descends from by refreshes")
    created_at: datetime
    expires_at: datetime
    refresh_expires_at: datetime
    last_used_at: datetime | None = Field(description="to the minute")
    ip: str | None
    user_agent: str | None
    impersonated_by: str | None = Field(
        description="the admin (ausr_ id) who holds this session as the user "
        "(`POST /v1/admin/users/{user_id}/impersonate`); null for the user's own sessions"
    )
    current: bool = Field(description="the session making this call")


class SessionsOut(BaseModel):
    model_config = example({"sessions": [SESSION_EXAMPLE]})

    sessions: list[SessionOut]


class ExportSessionOut(SessionOut):
    model_config = example({**SESSION_EXAMPLE, "revoked_at": None})

    revoked_at: datetime | None


class AuditEventOut(BaseModel):
    model_config = example(AUDIT_EVENT_EXAMPLE)

    id: str
    action: str
    actor_type: str
    actor_id: str | None
    target_user_id: str | None
    app_id: str | None
    env_id: str | None
    ip: str | None
    user_agent: str | None
    created_at: datetime
    metadata: dict[str, Any]


MFA_ENROLLMENT_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_ID[Prefix.MFA_ENROLLMENT],
    "type": "totp",
    "created_at": "2025-01-15T09:35:40.120448Z",
    "confirmed_at": "2025-01-15T09:36:02.918312Z",
    "last_used_at": "2025-01-16T08:02:11.402215Z",
}


class MfaEnrollmentOut(BaseModel):
    """A factor as the export lists it: never its secret."""

    model_config = example(MFA_ENROLLMENT_EXAMPLE)

    id: str
    type: str = Field(description="`totp`")
    created_at: datetime
    confirmed_at: datetime | None = Field(description="null while the enrollment is pending")
    last_used_at: datetime | None


class ExportOut(BaseModel):
    model_config = example(
        {
            "user": USER_EXAMPLE,
            "sessions": [{**SESSION_EXAMPLE, "revoked_at": None}],
            "devices": [],
            "organizations": [],
            "mfa_enrollments": [MFA_ENROLLMENT_EXAMPLE],
            "audit_events": [AUDIT_EVENT_EXAMPLE],
        }
    )

    user: UserOut
    sessions: list[ExportSessionOut]
    devices: list[dict[str, Any]]
    organizations: list[dict[str, Any]]
    mfa_enrollments: list[MfaEnrollmentOut]
    audit_events: list[AuditEventOut]


class ErrorDetail(BaseModel):
    field: str = Field(description="the parameter or body field, dotted for nested ones")
    message: str


class ErrorOut(BaseModel):
    """The one error envelope of every non-2xx answer (but the Faroe endpoint's, which answers
    in Faroe's format). Each operation's error responses show the `type`s it answers with."""

    error: str = Field(description="for people; may change")
    code: int = Field(description="the HTTP status")
    type: str = Field(description="the stable machine code")
    details: list[ErrorDetail] | None = Field(
        default=None, description="validation_error only: every field that failed"
    )
    ban_expires: datetime | None = Field(
        default=None, description="user_banned only: when the ban ends, if it does"
    )
    mfa_token: str | None = Field(
        default=None,
        description="mfa_required only: send it with a code to POST /v1/auth/mfa/challenge "
        "(5 minutes, single use, 5 tries)",
    )
    methods: list[str] | None = Field(
        default=None, description="mfa_required only: the factors the challenge accepts"
    )
