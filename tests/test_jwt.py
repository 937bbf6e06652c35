"""JWT access tokens: the claims, the keys that verify them, rotation, and several nodes."""

import asyncio
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from app import clock
from app.models import SigningKey
from app.security import tokens
from app.security.secret_box import SecretBox, SecretBoxError
from app.services import signing_keys
from app.services.audit import Origin
from tests.admin_support import audit_rows, auth, default_app, make_admin, make_key
from tests.conftest import SECRET_KEY
from tests.helpers import bearer, signup
from tests.jwt_support import CLAIMS, access_token, jwks, kid, node, verify


async def _rotate(client) -> SigningKey:
    async with client.app.state.sessions() as db:
        return await signing_keys.rotate(db, client.app.state.settings, Origin())


async def test_a_token_carries_the_contract_claims_and_verifies_with_the_jwks(client, pg):
    user = await signup(client)
    response = await client.post("/v1/auth/token", headers=bearer(user["session_token"]))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"].startswith("ajwk_")

    claims = verify(token, await jwks(client), audience=user["user"]["app_id"])
    assert set(claims) == CLAIMS
    session_id = await pg.fetchval(
        "SELECT id FROM sessions WHERE token_hash = $1", tokens.digest(user["session_token"])
    )
    assert claims["sub"] == user["user"]["id"]
    assert claims["sid"] == session_id
    assert (claims["role"], claims["email"], claims["email_verified"]) == (
        "user",
        user["user"]["email"],
        False,
    )
    assert claims["exp"] == claims["iat"] + 300
    assert abs(claims["iat"] - clock.now().timestamp()) < 5


async def test_each_token_has_its_own_jti(client):
    user = await signup(client)
    first = await access_token(client, user["session_token"])
    second = await access_token(client, user["session_token"])
    keys = await jwks(client)
    audience = user["user"]["app_id"]
    assert verify(first, keys, audience)["jti"] != verify(second, keys, audience)["jti"]


async def test_another_apps_audience_or_a_tampered_token_does_not_verify(client, pg):
    user = await signup(client)
    token = await access_token(client, user["session_token"])
    keys = await jwks(client)
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, keys, audience="aapp_01jhmms3m3ebsacsd61g9d528r")
    head, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"role":"user"', b'"role":"admin"')
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{head}.{forged}.{signature}", keys, audience=user["user"]["app_id"])


async def test_the_token_lives_jwt_ttl_seconds(database_url):
    async with node(database_url, jwt_ttl=60) as client:
        user = await signup(client)
        response = await client.post("/v1/auth/token", headers=bearer(user["session_token"]))
        assert response.json()["expires_in"] == 60
        token = response.json()["access_token"]
        keys = await jwks(client)
        claims = verify(token, keys, user["user"]["app_id"])
        assert claims["exp"] == claims["iat"] + 60
        clock.advance(timedelta(seconds=61))
        with pytest.raises(jwt.ExpiredSignatureError):
            verify(token, keys, user["user"]["app_id"])


async def test_es256_keys_sign_es256_tokens(database_url):
    async with node(database_url, jwt_algorithm="ES256") as client:
        user = await signup(client)
        token = await access_token(client, user["session_token"])
        keys = await jwks(client)
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        (jwk,) = keys["keys"]
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
        assert verify(token, keys, user["user"]["app_id"])["sub"] == user["user"]["id"]


async def test_a_signed_out_user_gets_no_token(client):
    user = await signup(client)
    await client.post("/v1/auth/signout", headers=bearer(user["session_token"]))
    response = await client.post("/v1/auth/token", headers=bearer(user["session_token"]))
    assert response.status_code == 401 and response.json()["type"] == "session_expired"


async def test_a_banned_user_gets_no_token_but_a_token_already_issued_lives_to_exp(client, pg):
    user = await signup(client)
    issued = await access_token(client, user["session_token"])
    root = auth(await make_admin(pg, await default_app(pg)))
    banned = await client.post(f"/v1/admin/users/{user['user']['id']}/ban", json={}, headers=root)
    assert banned.status_code == 200, banned.text
    response = await client.post("/v1/auth/token", headers=bearer(user["session_token"]))
    assert response.status_code in (401, 403)
    # The contract's trade-off: an issued JWT is not recalled; it ends at exp.
    keys = await jwks(client)
    assert verify(issued, keys, user["user"]["app_id"])["sub"] == user["user"]["id"]
    clock.advance(timedelta(seconds=301))
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(issued, keys, user["user"]["app_id"])


async def test_a_deleted_user_gets_no_token(client):
    user = await signup(client)
    deleted = await client.delete("/v1/auth/me", headers=bearer(user["session_token"]))
    assert deleted.status_code == 200
    response = await client.post("/v1/auth/token", headers=bearer(user["session_token"]))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer ukst_" + "A" * 43}], ids=["none", "unknown"]
)
async def test_no_session_no_token(client, headers):
    response = await client.post("/v1/auth/token", headers=headers)
    assert response.status_code == 401 and response.json()["type"] == "authentication_required"


async def test_an_api_key_gets_no_token(client, pg):
    key, _ = await make_key(pg, (await default_app(pg))[0])
    response = await client.post("/v1/auth/token", headers=auth(key))
    assert response.status_code == 401


async def test_the_jwks_is_public_cacheable_and_holds_no_private_part(client):
    user = await signup(client)
    await access_token(client, user["session_token"])
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["content-type"] == "application/json"
    (jwk,) = response.json()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")


async def test_the_jwks_of_a_fresh_ring_is_empty_and_makes_no_key(database_url, pg):
    async with node(database_url) as client:
        assert (await jwks(client)) == {"keys": []}
    assert await pg.fetchval("SELECT count(*) FROM signing_keys") == 0


async def test_the_private_key_is_stored_sealed_under_secret_key(client, pg):
    user = await signup(client)
    token = await access_token(client, user["session_token"])
    row = await pg.fetchrow("SELECT * FROM signing_keys")
    assert row["id"] == kid(token)
    assert row["private_key"].startswith("v1.") and "PRIVATE" not in row["private_key"]
    box = SecretBox(SECRET_KEY.encode())
    pem = box.decrypt(signing_keys.PURPOSE, row["private_key"], row["id"])
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    public = jwt.PyJWK((await jwks(client))["keys"][0]).key
    assert private.public_key() == public
    # Bound to its row, its purpose and the key: nowhere else does it open.
    with pytest.raises(SecretBoxError):
        box.decrypt(signing_keys.PURPOSE, row["private_key"], "ajwk_01jhmms3m3ebsacsd61g9d528r")
    with pytest.raises(SecretBoxError):
        box.decrypt("webhook-secret", row["private_key"], row["id"])
    with pytest.raises(SecretBoxError):
        SecretBox(b"another-secret-key-of-32-bytes-or-more").decrypt(
            signing_keys.PURPOSE, row["private_key"], row["id"]
        )


async def test_twenty_first_token_requests_on_two_nodes_make_one_key(database_url, pg):
    async with node(database_url) as one, node(database_url) as two:
        user = await signup(one)
        answers = await asyncio.gather(
            *(
                (one if i % 2 else two).post(
                    "/v1/auth/token", headers=bearer(user["session_token"])
                )
                for i in range(20)
            )
        )
        assert [a.status_code for a in answers] == [200] * 20
        assert {kid(a.json()["access_token"]) for a in answers} == {
            await pg.fetchval("SELECT id FROM signing_keys")
        }
        assert await pg.fetchval("SELECT count(*) FROM signing_keys") == 1
        assert len(await audit_rows(pg, action="signing_key.created")) == 1


async def test_two_nodes_sign_with_one_key_and_verify_each_others_tokens(database_url):
    async with node(database_url) as one, node(database_url) as two:
        user = await signup(one)
        first = await access_token(one, user["session_token"])
        second = await access_token(two, user["session_token"])
        assert kid(first) == kid(second)
        audience = user["user"]["app_id"]
        assert verify(first, await jwks(two), audience)["sub"] == user["user"]["id"]
        assert verify(second, await jwks(one), audience)["sub"] == user["user"]["id"]


async def test_a_node_whose_clock_is_behind_the_first_key_signs_with_it(database_url):
    async with node(database_url) as ahead, node(database_url) as behind:
        user = await signup(ahead)
        first = await access_token(ahead, user["session_token"])
        clock.advance(-timedelta(seconds=10))
        assert kid(await access_token(behind, user["session_token"])) == kid(first)


async def test_rotation_publishes_the_next_key_before_any_node_signs_with_it(database_url, pg):
    async with node(database_url) as one, node(database_url) as two:
        user = await signup(one)
        audience = user["user"]["app_id"]
        old = await access_token(one, user["session_token"])
        await jwks(two)  # node two has the ring cached now, before the rotation
        new_key = await _rotate(one)
        assert new_key.activated_at == new_key.created_at + signing_keys.ROTATION_GRACE
        row = await pg.fetchrow("SELECT * FROM signing_keys WHERE id = $1", kid(old))
        assert row["retired_at"] == new_key.activated_at

        # Within a reload interval every node has it in its JWKS, and still signs with the old.
        clock.advance(signing_keys.RELOAD_EVERY)
        for client in (one, two):
            assert {k["kid"] for k in (await jwks(client))["keys"]} == {kid(old), new_key.id}
            late = await access_token(client, user["session_token"])
            assert kid(late) == kid(old)

        # A JWKS cached just before the rotation has expired when the new key begins to sign.
        clock.advance(signing_keys.ROTATION_GRACE - signing_keys.RELOAD_EVERY)
        for client in (one, two):
            fresh = await access_token(client, user["session_token"])
            assert kid(fresh) == new_key.id
            assert verify(fresh, await jwks(client), audience)["sub"] == user["user"]["id"]
        # The old key's late tokens still verify: it stays published until they expire.
        assert verify(late, await jwks(two), audience)["sub"] == user["user"]["id"]


async def test_a_retired_key_leaves_the_jwks_when_its_last_token_has_expired(database_url):
    async with node(database_url) as client:
        user = await signup(client)
        new_key = await _rotate(client)  # the first key, signing at once (an empty ring)
        assert new_key.activated_at == new_key.created_at
        await _rotate(client)
        clock.advance(signing_keys.ROTATION_GRACE - timedelta(seconds=1))
        last = await access_token(client, user["session_token"])  # the old key's last token
        assert kid(last) == new_key.id
        clock.advance(timedelta(seconds=1) + timedelta(seconds=299))
        assert new_key.id in {k["kid"] for k in (await jwks(client))["keys"]}
        clock.advance(signing_keys.RELOAD_EVERY)  # and the node has read the ring again
        keys = await jwks(client)
        assert new_key.id not in {k["kid"] for k in keys["keys"]}
        assert len(keys["keys"]) == 1
        with pytest.raises(ValueError):  # its kid is no longer published
            verify(last, keys, user["user"]["app_id"])


async def test_rotation_is_audited(database_url, pg):
    async with node(database_url) as client:
        first = await _rotate(client)
        second = await _rotate(client)
    (row,) = [
        r
        for r in await audit_rows(pg, action="signing_key.rotated")
        if r["metadata"]["signing_key_id"] == second.id
    ]
    assert row["actor_type"] == "system"
    assert row["metadata"]["previous_signing_key_id"] == first.id
    assert "private" not in str(row["metadata"]).lower()
