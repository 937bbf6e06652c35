"""JWT signing keys: the key ring of app/services/signing_keys.py.

`private_key` holds a `v1.…` ciphertext of app/security/secret_box.py (purpose
"jwt-signing-key", bound to the key's id) of the PKCS#8 PEM, never the key itself. A key signs
from `activated_at` until `retired_at`; the newest key (retired_at NULL) is unique, so two nodes
creating the first key at once make one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE signing_keys (
            id text PRIMARY KEY,
            algorithm varchar(16) NOT NULL
                CONSTRAINT ck_signing_keys_algorithm CHECK (algorithm IN ('EdDSA', 'ES256')),
            private_key text NOT NULL,
            public_jwk jsonb NOT NULL,
            created_at timestamptz NOT NULL,
            activated_at timestamptz NOT NULL,
            retired_at timestamptz
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_signing_keys_one_newest ON signing_keys ((retired_at IS NULL)) "
        "WHERE retired_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE signing_keys")
