"""Webhooks: the endpoints of each app and the record of every delivery attempt.

`webhook_endpoints.secret` and `previous_secret` hold `v1.…` ciphertexts of
app/security/secret_box.py (purpose "webhook-secret", bound to the endpoint's id), never the
`whsec_…` itself. `previous_secret` still signs until `previous_secret_expires_at` (24 h after a
rotation). `failing_since` is the first failure of the current run of failures (NULL after a
success): 5 days of it disable the endpoint, with `disabled_reason`.

`webhook_deliveries` has one row per attempt, listed per endpoint newest first
(ix_webhook_deliveries_endpoint). `event_id` is the audit event's aevt_ id (the `webhook-id`
header): no foreign key, so a delivery's record outlives the audit rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE webhook_endpoints (
            id text PRIMARY KEY,
            app_id text NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            url text NOT NULL,
            description text NOT NULL DEFAULT '',
            events text[] NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            disabled_reason text,
            secret text NOT NULL,
            previous_secret text,
            previous_secret_expires_at timestamptz,
            failing_since timestamptz,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )
        """
    )
    # The raising statement's EXISTS looks for an app's enabled endpoints with an event.
    op.execute("CREATE INDEX ix_webhook_endpoints_app ON webhook_endpoints (app_id, id)")
    op.execute(
        """
        CREATE TABLE webhook_deliveries (
            id text PRIMARY KEY,
            endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
            event_id text NOT NULL,
            event_type varchar(64) NOT NULL,
            attempt integer NOT NULL,
            status varchar(16) NOT NULL
                CONSTRAINT ck_webhook_deliveries_status
                CHECK (status IN ('succeeded', 'failed', 'pending')),
            http_status integer,
            duration_ms integer,
            error text,
            response_body text,
            next_retry_at timestamptz,
            created_at timestamptz NOT NULL
        )
        """
    )
    # Ids are TypeIDs (time-ordered): an endpoint's deliveries newest first are this index
    # read backwards.
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhook_endpoints")
