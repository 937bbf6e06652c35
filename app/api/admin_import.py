"""POST /v1/admin/users/import: up to 1,000 users with their password hashes in one call.

Thin: parse, call services/user_import, shape. The callers are those of every admin route
(admin.get_admin); the users go into the caller's app unless it names one within its reach.
"""

from typing import Any

from fastapi import APIRouter, Depends

from app.api.admin import CALLER, Admin
from app.api.deps import Config, Db, From, rate_limit
from app.api.import_schemas import ImportIn, ImportOut
from app.api.openapi import JSON_BODY, TENANT, errors
from app.errors import ValidationFailed
from app.security.argon2_params import Argon2Bounds
from app.services import user_import

IMPORT_PATH = "/v1/admin/users/import"  # its own body cap: IMPORT_MAX_BODY_BYTES (main.py)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(rate_limit("admin"))])


@router.post(
    "/users/import",
    name="users.import",
    summary="Import users with their password hashes",
    response_model=ImportOut,
    response_model_exclude_none=True,  # a result has `id` or `error`, never null
    responses=errors(
        CALLER,
        JSON_BODY,
        ValidationFailed("users", "List should have at most 1000 items after validation, not 1001"),
        TENANT,
    ),
)
async def import_users(
    body: ImportIn, caller: Admin, db: Db, settings: Config, origin: From
) -> dict[str, Any]:
    """Import up to 1,000 users with their password hashes (bcrypt, argon2 PHC, Faroe argon2id
    with its salt, Django PBKDF2-SHA256), verified at sign-in and re-hashed to argon2id on the
    first REST sign-in unless already as strong. A row that is not valid, or whose e-mail a live
    user already has (`on_conflict`), is reported in `results` by its index; the others are
    imported. For more rows, or a file, use `python -m app import-users FILE.jsonl`."""
    rows = [row.model_dump(exclude_unset=True) for row in body.users]
    bounds = Argon2Bounds.from_settings(settings)
    totals, outcomes = await user_import.import_users(
        db, bounds, origin, caller, rows, body.on_conflict, body.app_id, body.env_id
    )
    return ImportOut.of(totals, [outcome.view() for outcome in outcomes])
