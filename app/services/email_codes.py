"""One-time codes sent by e-mail: a 6-digit code and a link token for one (user, purpose).

The rules, in one place:
- both secrets are stored only as SHA-256 (the link token has 256 random bits; the code has
  only 10^6 values, so it is also bound to its user and dies after `MAX_TRIES` wrong tries);
- one row per (user, purpose): issuing replaces it, so only the newest code and link work;
- single use: a code is consumed by deleting its row in the transaction of the change it
  allows, so of two requests presenting it at once exactly one wins;
- a code sent to an address dies when the user's address changes;
- a wrong, used, expired or unknown code all raise the same `InvalidCode`.
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.errors import InvalidCode
from app.models import EmailCode, User
from app.security import tokens

MAX_TRIES = 5
CODE_DIGITS = 6


class Purpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose's name, not a password
    CHANGE_EMAIL = "change_email"


LIFETIME = {
    Purpose.VERIFY_EMAIL: timedelta(hours=24),
    Purpose.RESET_PASSWORD: timedelta(hours=1),
    Purpose.CHANGE_EMAIL: timedelta(hours=1),
}
# The link token's prefix tells people (and secret scanners) what a token is for.
TOKEN_PREFIX = {
    Purpose.VERIFY_EMAIL: "ukev_",
    Purpose.RESET_PASSWORD: "ukpr_",
    Purpose.CHANGE_EMAIL: "ukec_",
}


@dataclass(frozen=True)
class Issued:
    """The secrets of a new code: they go into one mail and are never kept."""

    code: str
    token: str
    lifetime: timedelta


def _code_digest(row_user_id: str, code: str) -> bytes:
    # Bound to the user: the same 6 digits of two users have different digests, so a digest
    # alone (a leaked table) points at nothing and cannot be looked up across users.
    return tokens.digest(f"{row_user_id}:{code}")


async def issue(
    db: AsyncSession, user: User, purpose: Purpose, new_email: str | None = None
) -> Issued:
    """A new code and link for (user, purpose), replacing the previous one, sent to the
    user's current address (the new one for an e-mail change is `new_email`)."""
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    token = tokens.new_token(TOKEN_PREFIX[purpose])
    now = clock.now()
    values = {
        "user_id": user.id,
        "purpose": purpose.value,
        "email": user.email,
        "new_email": new_email,
        "code_hash": _code_digest(user.id, code),
        "token_hash": tokens.digest(token),
        "attempts": 0,
        "created_at": now,
        "expires_at": now + LIFETIME[purpose],
    }
    statement = insert(EmailCode).values(**values)
    await db.execute(
        statement.on_conflict_do_update(
            constraint="uq_email_codes_user_purpose",
            set_={key: statement.excluded[key] for key in values if key != "user_id"},
        )
    )
    return Issued(code, token, LIFETIME[purpose])


def _alive(row: EmailCode | None, user: User | None) -> bool:
    """Not expired, and sent to the address the user still has."""
    if row is None or user is None or user.deleted_at is not None:
        return False
    if row.expires_at <= clock.now():
        return False
    # Case-folded like the unique index (lower(email)); both are stored normalised.
    return row.email.lower() == user.email.lower()


async def _locked(db: AsyncSession, *conditions: object) -> EmailCode | None:
    row: EmailCode | None = (
        await db.execute(
            select(EmailCode)
            .where(*conditions)  # type: ignore[arg-type]
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return row


async def by_token(db: AsyncSession, purpose: Purpose, token: str) -> tuple[EmailCode, User]:
    """The live code row of a link token, locked, with its user. InvalidCode otherwise."""
    row = await _locked(
        db,
        col(EmailCode.token_hash) == tokens.digest(token),
        col(EmailCode.purpose) == purpose.value,
    )
    user = await db.get(User, row.user_id) if row is not None else None
    if row is None or not _alive(row, user):
        raise InvalidCode()
    assert user is not None
    return row, user


async def check_code(db: AsyncSession, user: User | None, purpose: Purpose, code: str) -> EmailCode:
    """The live code row of `user` if `code` is its code, locked. A wrong code counts one try
    (the row dies at MAX_TRIES) and raises InvalidCode: the caller must commit before the
    error leaves its transaction, or the try is not counted — see `count_wrong_try`."""
    if user is None:
        raise InvalidCode()
    row = await _locked(
        db, col(EmailCode.user_id) == user.id, col(EmailCode.purpose) == purpose.value
    )
    if row is None or not _alive(row, user) or row.attempts >= MAX_TRIES:
        raise InvalidCode()
    if not hmac.compare_digest(row.code_hash, _code_digest(user.id, code.strip())):
        raise WrongCode(row.id)
    return row


class WrongCode(InvalidCode):
    """A wrong code for a live row: the row's tries go up (`count_wrong_try`) before the
    answer, which is the plain `invalid_code`."""

    def __init__(self, row_id: int | None) -> None:
        super().__init__()
        self.row_id = row_id


async def count_wrong_try(db: AsyncSession, row_id: int | None) -> None:
    """One more wrong try; the row is deleted at MAX_TRIES (in the caller's transaction)."""
    if row_id is None:
        return
    await db.execute(
        update(EmailCode)
        .where(col(EmailCode.id) == row_id)
        .values(attempts=col(EmailCode.attempts) + 1)
    )
    await db.execute(
        delete(EmailCode).where(col(EmailCode.id) == row_id, col(EmailCode.attempts) >= MAX_TRIES)
    )


async def consume(db: AsyncSession, row: EmailCode) -> None:
    """Use the code up, in the transaction of the change it allows."""
    await db.execute(delete(EmailCode).where(col(EmailCode.id) == row.id))
