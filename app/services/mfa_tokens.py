"""The mfa_token: what a right password buys a user with MFA on, instead of a session.

The rules, in one place:
- 256 random bits (`ukmt_…`), stored only as SHA-256, bound to one user;
- 5 minutes, and 5 wrong codes: the row is deleted at the fifth;
- single use: the challenge that succeeds deletes the row in the transaction that issues the
  session, under the row's lock, so of two challenges with one token exactly one wins;
- a dead token (used, expired, out of tries, unknown) is a 401: the sign-in starts over.
"""

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.errors import MfaRequired
from app.models import MfaToken, User
from app.security import tokens

TOKEN_PREFIX = "ukmt_"  # noqa: S105 - a prefix, not a secret
LIFETIME = timedelta(minutes=5)
MAX_TRIES = 5
METHODS = ("totp", "recovery_code")


async def issue(db: AsyncSession, user: User) -> str:
    """A new token for `user`, in the caller's transaction (the sign-in's)."""
    now = clock.now()
    # The user's expired tokens go now: the table holds only live ones and a few minutes' worth.
    await db.execute(
        delete(MfaToken).where(col(MfaToken.user_id) == user.id, col(MfaToken.expires_at) <= now)
    )
    token = tokens.new_token(TOKEN_PREFIX)
    db.add(
        MfaToken(
            user_id=user.id,
            token_hash=tokens.digest(token),
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    return token


def required(token: str) -> MfaRequired:
    return MfaRequired(token, list(METHODS))


async def owner(db: AsyncSession, token: str) -> str | None:
    """The user id of a token's row (live or not), without a lock: the caller locks the user
    row first, then the token (lock), in the order every change of a user takes."""
    user_id: str | None = (
        await db.execute(
            select(col(MfaToken.user_id)).where(col(MfaToken.token_hash) == tokens.digest(token))
        )
    ).scalar_one_or_none()
    return user_id


async def lock(db: AsyncSession, token: str) -> MfaToken | None:
    """The token's row, locked, if it is still alive (not expired, tries left); an expired
    one is deleted on the way (the caller commits that)."""
    row: MfaToken | None = (
        await db.execute(
            select(MfaToken)
            .where(col(MfaToken.token_hash) == tokens.digest(token))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.expires_at <= clock.now() or row.attempts >= MAX_TRIES:
        await consume(db, row)
        return None
    return row


async def count_wrong_try(db: AsyncSession, row: MfaToken) -> None:
    """One more wrong code; the token dies at MAX_TRIES (in the caller's transaction)."""
    await db.execute(
        update(MfaToken)
        .where(col(MfaToken.id) == row.id)
        .values(attempts=col(MfaToken.attempts) + 1)
    )
    await db.execute(
        delete(MfaToken).where(col(MfaToken.id) == row.id, col(MfaToken.attempts) >= MAX_TRIES)
    )


async def consume(db: AsyncSession, row: MfaToken) -> None:
    await db.execute(delete(MfaToken).where(col(MfaToken.id) == row.id))


async def forget_user(db: AsyncSession, user_id: str) -> None:
    """Every token of the user ends (its factors were removed, or the account deleted)."""
    await db.execute(delete(MfaToken).where(col(MfaToken.user_id) == user_id))
