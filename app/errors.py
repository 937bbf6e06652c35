"""Domain errors and the one JSON error envelope every non-2xx answer uses."""

from datetime import datetime
from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and a stable machine `type`; services raise these."""

    status = 400
    type = "bad_request"
    message = "bad request"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return envelope(self.status, self.type, self.message, **self.extra)


def envelope(status: int, type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "code": status, "type": type_, **extra}


class ValidationFailed(ApiError):
    status, type, message = 422, "validation_error", "request validation failed"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details=[{"field": field, "message": message}])


class AuthenticationRequired(ApiError):
    status, type, message = 401, "authentication_required", "authentication required"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": "Bearer"}


class InvalidCredentials(ApiError):
    status, type, message = 401, "invalid_credentials", "invalid credentials"


class SessionExpired(ApiError):
    status, type, message = 401, "session_expired", "session expired or revoked"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class UserBanned(ApiError):
    status, type, message = 403, "user_banned", "user is banned"

    def __init__(self, ban_expires: datetime | None) -> None:
        if ban_expires is None:
            super().__init__()
        else:
            super().__init__(ban_expires=ban_expires.isoformat())


class Forbidden(ApiError):
    status, type, message = 403, "forbidden", "forbidden"


class NotFound(ApiError):
    status, type, message = 404, "not_found", "not found"


class EmailTaken(ApiError):
    status, type, message = 409, "email_taken", "e-mail address is already in use"


class UsernameTaken(ApiError):
    status, type, message = 409, "username_taken", "username is already in use"


class Conflict(ApiError):
    status, type, message = 409, "conflict", "conflict"


class PayloadTooLarge(ApiError):
    status, type, message = 413, "payload_too_large", "request body too large"


class RateLimited(ApiError):
    status, type, message = 429, "rate_limited", "too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(ApiError):
    status, type, message = 503, "service_unavailable", "service temporarily unavailable"

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}
