"""Request and response models of MFA (TOTP enrollment, recovery codes, the sign-in challenge)."""

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from app.api.schemas import NO_NUL, Keywords, Password, Strict, example, trimmed
from app.services import users
from app.services.mfa import Factor

TOTP_CODE_RE = re.compile(r"[0-9]{6}")
TOTP_CODE_MESSAGE = "must be the 6 digits the authenticator app shows"


def clean_totp_code(value: str) -> str:
    value = value.strip()
    if not TOTP_CODE_RE.fullmatch(value):
        raise ValueError(TOTP_CODE_MESSAGE)
    return value


# Spaces around it (a paste) are trimmed; a well-formed wrong code is 400 invalid_code.
Code = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(clean_totp_code),
    Keywords(pattern=trimmed("[0-9]{6}"), examples=["402913"]),
]
# A recovery code as shown (`xxxxx-xxxxx`); case, dashes and spaces do not count. Any other
# text is a wrong code (400 invalid_code), not a malformed one.
RecoveryCode = Annotated[
    str,
    Field(min_length=1, max_length=64),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL, examples=["k7q2m-x4tfa"]),
]
MfaToken = Annotated[
    str,
    Field(min_length=1, max_length=256),
    AfterValidator(users.reject_nul),
    Keywords(pattern=NO_NUL, examples=["ukmt_3q9GdV1rPj0xYh6bN2sLwZ8cT5fK7mA4uE1oR9iQ0vX"]),
]

# Exactly one of `code` and `recovery_code` (`null` counts as absent), said with `not` as
# schemas.ONE_IDENTIFIER says it for sign-in.
ONE_FACTOR: dict[str, JsonValue] = {
    "not": {
        "anyOf": [
            {
                "required": ["code", "recovery_code"],
                "properties": {"code": {"type": "string"}, "recovery_code": {"type": "string"}},
            },
            {"properties": {"code": {"type": "null"}, "recovery_code": {"type": "null"}}},
        ]
    }
}
ONE_FACTOR_MESSAGE = "give exactly one of code or recovery_code"


class _OneFactor(Strict):
    code: Code | None = Field(
        default=None, description="the 6 digits the authenticator app shows now"
    )
    recovery_code: RecoveryCode | None = Field(
        default=None, description="one of the recovery codes (each works once); not with code"
    )

    @model_validator(mode="after")
    def one_factor(self) -> Any:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError(ONE_FACTOR_MESSAGE)
        return self

    def factor(self) -> Factor:
        return Factor(code=self.code, recovery_code=self.recovery_code)


class PasswordIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"password": "correct horse battery staple"}]},
    )

    password: Password


class ConfirmIn(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"code": "402913"}]})

    code: Code = Field(description="the 6 digits the authenticator app shows now")


class PasswordFactorIn(_OneFactor):
    """The password and a second factor: a TOTP `code` or a `recovery_code`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"password": "correct horse battery staple", "code": "402913"},
                {"password": "correct horse battery staple", "recovery_code": "k7q2m-x4tfa"},
            ],
            **ONE_FACTOR,
        },
    )

    password: Password


class ChallengeIn(_OneFactor):
    """The `mfa_token` of the sign-in's `mfa_required` answer, and a TOTP `code` or a
    `recovery_code`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"mfa_token": "ukmt_3q9GdV1rPj0xYh6bN2sLwZ8cT5fK7mA4uE1oR9iQ0vX", "code": "402913"},
                {
                    "mfa_token": "ukmt_3q9GdV1rPj0xYh6bN2sLwZ8cT5fK7mA4uE1oR9iQ0vX",
                    "recovery_code": "k7q2m-x4tfa",
                },
            ],
            **ONE_FACTOR,
        },
    )

    mfa_token: MfaToken


OTPAUTH_EXAMPLE = (
    "otpauth://totp/Default%20app:ada%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    "&issuer=Default%20app"
)


class TotpStartOut(BaseModel):
    model_config = example(
        {
            "id": "amfa_01jhmn2f6reb4t8q0c3vw5x9ka",
            "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            "otpauth_uri": OTPAUTH_EXAMPLE,
            "qr_svg": '<svg xmlns="http://www.w3.org/2000/svg" width="148" height="148">…</svg>',
        }
    )

    id: str = Field(description="the enrollment (`amfa_…`), pending until confirmed")
    secret: str = Field(description="base32, for typing into an authenticator app; shown once")
    otpauth_uri: str = Field(description="the same secret as a link authenticator apps import")
    qr_svg: str = Field(description="`otpauth_uri` as an SVG QR code, to show for scanning")


class RecoveryCodesOut(BaseModel):
    model_config = example(
        {
            "recovery_codes": [
                "k7q2m-x4tfa",
                "p3zre-hw6nc",
                "a5ujd-27kqm",
                "tq4xe-mbn3s",
                "w2cfh-ry7pe",
                "nz6ka-d3vtg",
                "e4mqb-x5jwr",
                "h7snc-2pfua",
                "r3gwt-k6ezq",
                "b5xdm-yq4hn",
            ]
        }
    )

    recovery_codes: list[str] = Field(
        description="10 codes, each usable once instead of a TOTP code; shown only now"
    )


class MfaStatusOut(BaseModel):
    model_config = example(
        {
            "enabled": True,
            "methods": ["totp", "recovery_code"],
            "pending": False,
            "recovery_codes_left": 9,
            "created_at": "2025-01-15T09:36:02.918312Z",
            "last_used_at": "2025-01-16T08:02:11.402215Z",
        }
    )

    enabled: bool
    methods: list[str] = Field(description="what a sign-in challenge accepts; empty when off")
    pending: bool = Field(description="an enrollment was started and awaits its first code")
    recovery_codes_left: int
    created_at: datetime | None = Field(description="when MFA was turned on")
    last_used_at: datetime | None = Field(description="the last TOTP code accepted")
