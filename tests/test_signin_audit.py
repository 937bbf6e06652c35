"""What a failed sign-in leaves in the audit log: the account it names, never what was typed.

Whatever is typed into the e-mail or username field is kept only as the account it names (in
that account's stored spelling), or, for no account, as a masked hint of an e-mail address —
a password typed into the wrong box must not reach admins or exports."""

import json

import asyncpg
import httpx

from tests.helpers import PASSWORD, signup


async def _failed_signin_metadata(pg: asyncpg.Connection) -> dict:
    rows = await pg.fetch(
        "SELECT metadata FROM audit_events WHERE action = 'user.signin_failed' ORDER BY id"
    )
    assert len(rows) == 1
    return json.loads(rows[0]["metadata"])


async def _signin(client: httpx.AsyncClient, **body: str) -> None:
    response = await client.post("/v1/auth/signin", json=body)
    assert response.status_code == 401, response.text


async def test_a_password_typed_as_the_email_is_not_stored(client, pg):
    await _signin(client, email="Tr0ub4dor&3-secret", password=PASSWORD)
    metadata = await _failed_signin_metadata(pg)
    assert "Tr0ub4dor" not in json.dumps(metadata)
    assert metadata == {"reason": "invalid_credentials", "identifier_hint": None}


async def test_a_password_typed_as_the_username_is_not_stored(client, pg):
    await _signin(client, username="hunter2hunter2", password=PASSWORD)
    assert "hunter2" not in json.dumps(await _failed_signin_metadata(pg))


async def test_an_unknown_address_is_kept_masked(client, pg):
    await _signin(client, email="grace.hopper@example.com", password=PASSWORD)
    metadata = await _failed_signin_metadata(pg)
    assert metadata["identifier_hint"] == "g…@example.com"
    assert "grace" not in json.dumps(metadata)


async def test_a_known_account_is_named_as_stored(client, pg):
    data = await signup(client, email="Ada.Lovelace@example.com", username="ada_l")
    await _signin(client, email="  ADA.LOVELACE@EXAMPLE.COM ", password="wrong-password-1")
    metadata = await _failed_signin_metadata(pg)
    assert metadata == {"reason": "invalid_credentials", "identifier": "Ada.Lovelace@example.com"}
    row = await pg.fetchrow("SELECT target_user_id FROM audit_events WHERE action = $1",
                            "user.signin_failed")  # fmt: skip
    assert row["target_user_id"] == data["user"]["id"]


async def test_a_known_username_is_named_as_stored(client, pg):
    await signup(client, username="Grace_H")
    await _signin(client, username="GRACE_h", password="wrong-password-1")
    metadata = await _failed_signin_metadata(pg)
    assert metadata == {"reason": "invalid_credentials", "identifier": "grace_h"}


# ---- a successful sign-in's row: one statement, unless a flush subscriber acts on it --------


async def test_a_sign_in_writes_its_session_and_audit_row(client, pg):
    data = await signup(client, email="kay@example.com")
    response = await client.post(
        "/v1/auth/signin",
        json={"email": "kay@example.com", "password": PASSWORD},
        headers={"User-Agent": "pytest-agent"},
    )
    assert response.status_code == 200, response.text
    user_id = data["user"]["id"]
    row = await pg.fetchrow(
        "SELECT actor_type, actor_id, target_user_id, user_agent, metadata FROM audit_events "
        "WHERE action = 'user.signin'"
    )
    assert (row["actor_type"], row["actor_id"], row["target_user_id"]) == ("user", user_id, user_id)
    assert row["user_agent"] == "pytest-agent"
    assert json.loads(row["metadata"]) == {}
    me = await client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {response.json()['session_token']}"}
    )
    assert me.status_code == 200


def test_only_rows_no_subscriber_acts_on_are_unheard():
    from app.services import audit, webhooks  # noqa: F401  (webhooks subscribes on import)

    assert audit.unheard("user.signin")
    assert not audit.unheard("user.signup")  # user.created: raise_events acts on it


async def test_a_subscriber_hearing_sign_ins_gets_them_through_the_flush(client, monkeypatch):
    from app.services import audit

    heard: list[str] = []

    def listener(connection, rows):
        heard.extend(row.action for row in rows)

    # Declares nothing: hears every row, so a sign-in's must pass through the flush.
    monkeypatch.setattr(audit, "_subscribers", [*audit._subscribers, listener])
    await signup(client, email="lin@example.com")
    response = await client.post(
        "/v1/auth/signin", json={"email": "lin@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert "user.signin" in heard
