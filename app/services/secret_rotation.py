"""`python -m app reseal-secrets`: every stored secret sealed again under the current SECRET_KEY,
so the keys in SECRET_KEY_PREVIOUS can be dropped (security/secret_box: rotation).

The stored secrets: TOTP secrets (mfa_enrollments.secret), webhook signing secrets
(webhook_endpoints.secret, previous_secret) and JWT signing keys
(signing_keys.private_key). Each row is read, opened with any known key and,
when an old key was needed, sealed again under the current one; one transaction per table,
rows locked, so a concurrent use of a secret waits for its new ciphertext.
"""

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import MfaEnrollment, SigningKey, WebhookEndpoint
from app.security import secret_box
from app.security.secret_box import SecretBox, SecretBoxError
from app.services import mfa, signing_keys, webhooks
from app.settings import Settings


@dataclass
class Resealed:
    resealed: int = 0
    current: int = 0
    # Rows no known key opens: left as they are, named for the operator.
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"resealed {self.resealed} secret(s); {self.current} already under SECRET_KEY"
        if self.unreadable:
            text += f"; {len(self.unreadable)} open with no known key: {', '.join(self.unreadable)}"
        return text


def _reseal(box: SecretBox, purpose: str, sealed: str, row_id: str, tally: Resealed) -> str:
    try:
        plaintext, stale = box.open(purpose, sealed, row_id)
    except SecretBoxError:
        tally.unreadable.append(row_id)
        return sealed
    if not stale:
        tally.current += 1
        return sealed
    tally.resealed += 1
    return box.encrypt(purpose, plaintext, row_id)


async def reseal_all(db: AsyncSession, settings: Settings) -> Resealed:
    box = secret_box.box(settings)
    tally = Resealed()
    async with db.begin():
        enrollments = (
            await db.execute(
                select(MfaEnrollment).order_by(col(MfaEnrollment.id)).with_for_update()
            )
        ).scalars()
        for enrollment in enrollments:
            enrollment.secret = _reseal(
                box, mfa.SECRET_PURPOSE, enrollment.secret, enrollment.id, tally
            )
    async with db.begin():
        endpoints = (
            await db.execute(
                select(WebhookEndpoint).order_by(col(WebhookEndpoint.id)).with_for_update()
            )
        ).scalars()
        for endpoint in endpoints:
            purpose = webhooks.SECRET_PURPOSE
            endpoint.secret = _reseal(box, purpose, endpoint.secret, endpoint.id, tally)
            if endpoint.previous_secret is not None:
                endpoint.previous_secret = _reseal(
                    box, purpose, endpoint.previous_secret, endpoint.id, tally
                )
    async with db.begin():
        keys = (
            await db.execute(select(SigningKey).order_by(col(SigningKey.id)).with_for_update())
        ).scalars()
        for key in keys:
            key.private_key = _reseal(box, signing_keys.PURPOSE, key.private_key, key.id, tally)
    return tally
