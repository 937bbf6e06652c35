"""Request and response models of POST /v1/admin/users/import.

The body's shape (JSON types, at most 1,000 rows, no unknown keys) is checked here: a 422 for
the whole call. The rules of a row's values (e-mail syntax, username, hash format and bounds,
…) are services/user_import's, reported per row, so one bad row never refuses the others;
which is why the row fields carry no pattern here.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from app.api.schemas import AppRef, EnvRef, Strict
from app.services import user_import

_BCRYPT_EXAMPLE = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"


class ImportUserIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password_hash": _BCRYPT_EXAMPLE,
                    "name": "Ada Lovelace",
                    "email_verified": True,
                    "created_at": "2021-03-04T05:06:07Z",
                }
            ]
        },
    )

    email: StrictStr = Field(description="checked like a sign-up's e-mail, per row")
    password_hash: StrictStr | None = Field(
        default=None,
        description=f"{user_import.HASH_FORMATS}; absent: no password (the user resets it by "
        "e-mail). Costs are bounded (bcrypt <= 15, pbkdf2 <= 2,000,000 iterations, argon2 "
        "ARGON2_MAX_*). A Faroe hash and salt are standard base64.",
    )
    password_salt: StrictStr | None = Field(
        default=None, description="base64; only with a Faroe password_hash_algorithm_id"
    )
    password_hash_algorithm_id: StrictStr | None = Field(
        default=None,
        description="a Faroe id, `argon2id.T.M.P.L`",
        examples=["argon2id.3.65536.1.32"],
    )
    name: StrictStr | None = None
    username: StrictStr | None = Field(default=None, description="3-32 of [A-Za-z0-9_.-]")
    phone: StrictStr | None = Field(default=None, description="E.164")
    email_verified: StrictBool | None = None
    metadata: dict[str, StrictStr] | None = Field(
        default=None, description="at most 50 keys of 1-64 characters, values up to 1,024"
    )
    created_at: StrictStr | None = Field(
        default=None, description="ISO 8601 with an offset, not in the future; default now"
    )


class ImportIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "users": [{"email": "ada@example.com", "password_hash": _BCRYPT_EXAMPLE}],
                    "on_conflict": "skip",
                }
            ]
        },
    )

    users: list[ImportUserIn] = Field(min_length=1, max_length=user_import.MAX_ROWS_PER_CALL)
    on_conflict: Literal["skip", "update", "error"] = Field(
        default="skip",
        description="a live user of the environment already has the e-mail: leave it "
        "(`skipped`), update its name, username, phone, metadata, email_verified and hash from "
        "the row (`updated`; `skipped` when nothing differs), or report the row as an error",
    )
    app_id: AppRef | None = Field(default=None, description="default: the caller's app")
    env_id: EnvRef | None = Field(default=None, description="default: the app's default env")


class ImportResultOut(BaseModel):
    index: int = Field(description="the row's 0-based position in `users`")
    status: Literal["created", "updated", "skipped", "error"]
    id: str | None = Field(default=None, description="the user created, updated or skipped")
    error: str | None = Field(default=None, description="why the row was not imported")


class ImportOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": 1,
                    "updated": 0,
                    "skipped": 0,
                    "errors": 1,
                    "results": [
                        {"index": 0, "status": "created", "id": "ausr_01jd8k3m4n5p6q7r8s9t0v1w2x"},
                        {
                            "index": 1,
                            "status": "error",
                            "error": "email: is not a valid e-mail address (…)",
                        },
                    ],
                }
            ]
        }
    )

    created: int
    updated: int
    skipped: int
    errors: int
    results: list[ImportResultOut]

    @classmethod
    def of(cls, totals: user_import.Totals, results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "created": totals.created,
            "updated": totals.updated,
            "skipped": totals.skipped,
            "errors": totals.errors,
            "results": results,
        }
