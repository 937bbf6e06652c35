"""Domain errors and the one JSON error envelope every non-2xx answer uses.

Each class is also the catalogue entry of its error: status, `type`, a typical message and what
it means. The handlers of app/main.py and the body-size cap answer with these classes, and
app/api/docs.py documents every route's errors from them, so /docs shows what is sent.
"""

from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

_INSTANT: TypeAdapter[datetime] = TypeAdapter(datetime)


def json_instant(value: datetime) -> str:
    """An instant spelled as in every response model (pydantic's JSON: `Z` for UTC), so an
    error body and the user JSON write the same `ban_expires` the same way."""
    spelled: str = _INSTANT.dump_python(value, mode="json")
    return spelled


class ApiError(Exception):
    """An error with an HTTP status and a stable machine `type`; services raise these."""

    status = 400
    type = "bad_request"
    message = "bad request"
    description = "the request cannot be served as sent"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return envelope(self.status, self.type, self.message, **self.extra)

    @classmethod
    def example(cls) -> "ApiError":
        """The instance the API docs show when a route names only the class."""
        return cls()


def envelope(status: int, type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "code": status, "type": type_, **extra}


class BadRequest(ApiError):
    status, type, message = 400, "bad_request", "request body is not valid JSON"
    description = "the body is not JSON text (a syntax error, not UTF-8, or nested too deeply)"


class ValidationFailed(ApiError):
    status, type, message = 422, "validation_error", "request validation failed"
    description = (
        "a parameter or body field is missing, malformed or out of range; `details` names each"
    )

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details=[{"field": field, "message": message}])

    @classmethod
    def example(cls) -> "ApiError":
        return cls("email", "is not a valid e-mail address (An email address must have an @-sign.)")


class AuthenticationRequired(ApiError):
    status, type, message = 401, "authentication_required", "authentication required"
    description = "no bearer token, or one that was never issued"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": "Bearer"}


class InvalidCredentials(ApiError):
    status, type, message = 401, "invalid_credentials", "invalid credentials"
    description = "wrong password, or no such account (the same answer for both)"


class SessionExpired(ApiError):
    status, type, message = 401, "session_expired", "session expired or revoked"
    description = "the token expired or was revoked (sign-out, ban, password change, …)"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class UserBanned(ApiError):
    status, type, message = 403, "user_banned", "user is banned"
    description = "the user is banned; `ban_expires` says until when, if the ban ends"

    def __init__(self, ban_expires: datetime | None) -> None:
        if ban_expires is None:
            super().__init__()
        else:
            super().__init__(ban_expires=json_instant(ban_expires))

    @classmethod
    def example(cls) -> "ApiError":
        return cls(datetime(2025, 2, 14, 9, 30, tzinfo=UTC))


class EmailNotVerified(ApiError):
    status, type, message = 403, "email_not_verified", "e-mail address is not verified"
    description = (
        "the app requires a verified e-mail address before sign-in; the verification mail "
        "was sent at sign-up (POST /v1/auth/verify-email/send sends another)"
    )


class MfaRequired(ApiError):
    status, type, message = 401, "mfa_required", "a second factor is required"
    description = (
        "the password was right and the user has MFA on: no session yet; send `mfa_token` "
        "(5 minutes, single use, 5 tries) with a code to POST /v1/auth/mfa/challenge"
    )

    def __init__(self, mfa_token: str, methods: list[str]) -> None:
        super().__init__(mfa_token=mfa_token, methods=methods)

    @classmethod
    def example(cls) -> "ApiError":
        return cls("ukmt_3q9GdV1rPj0xYh6bN2sLwZ8cT5fK7mA4uE1oR9iQ0vX", ["totp", "recovery_code"])


class InvalidCode(ApiError):
    status, type, message = 400, "invalid_code", "the code or link is invalid or has expired"
    description = (
        "a wrong, used or expired code or link token (the same answer for each); a code dies "
        "after 5 wrong tries, and only the newest one sent works"
    )


class Forbidden(ApiError):
    status, type, message = 403, "forbidden", "forbidden"
    description = "the caller is known but may not do this"


class NotFound(ApiError):
    status, type, message = 404, "not_found", "not found"
    description = "no such resource, or one outside the caller's reach"


class MethodNotAllowed(ApiError):
    status, type, message = 405, "method_not_allowed", "method not allowed"
    description = "the path exists, but not with this method; `Allow` lists the ones it has"


class EmailTaken(ApiError):
    status, type, message = 409, "email_taken", "e-mail address is already in use"
    description = "another live user of the app environment has this e-mail address"


class UsernameTaken(ApiError):
    status, type, message = 409, "username_taken", "username is already in use"
    description = "another live user of the app environment has this username"


class Conflict(ApiError):
    status, type, message = 409, "conflict", "conflict"
    description = "the change does not fit the resource's current state"


class PayloadTooLarge(ApiError):
    status, type, message = 413, "payload_too_large", "request body too large"
    description = "the body is over MAX_BODY_BYTES (64 KiB by default)"


class UnsupportedMediaType(ApiError):
    status, type, message = 415, "unsupported_media_type", "request body must be application/json"
    description = "the body is not sent as `application/json`"


class RateLimited(ApiError):
    status, type, message = 429, "rate_limited", "too many requests"
    description = "a rate limit is spent; `Retry-After` says when to try again"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(retry_after)}

    @classmethod
    def example(cls) -> "ApiError":
        return cls(retry_after=42)


class ServiceUnavailable(ApiError):
    status, type, message = 503, "service_unavailable", "service temporarily unavailable"
    description = "a passing condition; retry after `Retry-After` seconds"

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class DatabaseUnavailable(ServiceUnavailable):
    message = "database temporarily unavailable"
    description = "the database cannot be reached right now; retry after `Retry-After` seconds"


class TransactionConflict(ServiceUnavailable):
    message = "the change collided with another; retry"
    description = "a deadlock or serialization failure outlasted the retries; nothing was written"


class HashingOverloaded(ServiceUnavailable):
    message = "password hashing is overloaded, retry shortly"
    description = "too many passwords wait to be hashed; retry after `Retry-After` seconds"


class InternalError(ApiError):
    status, type, message = 500, "internal_error", "internal error"
    description = "a bug: the body names the request id to look for in the log"


# The type an error of only a status carries (Starlette's 404 for an unknown path, its 405).
GENERIC = (
    BadRequest,
    AuthenticationRequired,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    ServiceUnavailable,
    InternalError,
)
TYPE_OF_STATUS = {error.status: error.type for error in GENERIC}
