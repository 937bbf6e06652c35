"""The app and environment a public call names (body `app_id`/`env_id`, headers `X-App-ID`/
`X-Env-ID`): a slug, or a TypeID of the right prefix. Slugs never contain '_', so anything with
one is an id: a malformed or wrong-prefix one is a 422 naming the field, an unknown one a 404."""

from typing import Any

import pytest

from app.ids import Prefix, new_id
from tests.helpers import PASSWORD, unique_email

# Well-formed ids: of another kind, and of the right kind but naming nothing.
WRONG_PREFIX = {"app": new_id(Prefix.USER), "env": new_id(Prefix.APP)}
UNKNOWN = {"app": new_id(Prefix.APP), "env": new_id(Prefix.ENV)}
MALFORMED = {"app": "aapp_not-a-typeid", "env": "aenv_not-a-typeid"}
BODY_FIELD = {"app": "app_id", "env": "env_id"}
HEADER = {"app": "X-App-ID", "env": "X-Env-ID"}


def _request(route: str, where: str, which: str, value: str) -> dict[str, Any]:
    if route == "signup":
        body: dict[str, Any] = {"email": unique_email(), "password": PASSWORD}
    else:
        body = {"email": "nobody@example.com", "password": PASSWORD}
    headers: dict[str, str] = {}
    if where == "body":
        body[BODY_FIELD[which]] = value
    else:
        headers[HEADER[which]] = value
    return {"url": f"/v1/auth/{route}", "json": body, "headers": headers}


@pytest.mark.parametrize("bad", [WRONG_PREFIX, MALFORMED], ids=["wrong-prefix", "malformed"])
@pytest.mark.parametrize("which", ["app", "env"])
@pytest.mark.parametrize("where", ["body", "header"])
@pytest.mark.parametrize("route", ["signup", "signin"])
async def test_bad_id_is_422_naming_the_field(client, pg, route, where, which, bad):
    response = await client.post(**_request(route, where, which, bad[which]))
    assert response.status_code == 422, response.text
    data = response.json()
    assert data["type"] == "validation_error"
    field = BODY_FIELD[which] if where == "body" else HEADER[which].lower()
    assert [d["field"] for d in data["details"]] == [field]
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("which", ["app", "env"])
@pytest.mark.parametrize("where", ["body", "header"])
@pytest.mark.parametrize("route", ["signup", "signin"])
async def test_well_formed_unknown_id_is_404(client, route, where, which):
    response = await client.post(**_request(route, where, which, UNKNOWN[which]))
    assert response.status_code == 404, response.text
    assert response.json()["type"] == "not_found"


@pytest.mark.parametrize("where", ["body", "header"])
async def test_slugs_and_ids_of_the_default_tenant_work(client, pg, where):
    app_id, env_id = await pg.fetchrow(
        "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id "
        "WHERE a.slug = 'default' AND e.is_default"
    )
    for app_ref, env_ref in [("default", "production"), (app_id, env_id)]:
        request = _request("signup", where, "app", app_ref)
        if where == "body":
            request["json"]["env_id"] = env_ref
        else:
            request["headers"]["X-Env-ID"] = env_ref
        response = await client.post(**request)
        assert response.status_code == 201, response.text
        assert (response.json()["user"]["app_id"], response.json()["user"]["env_id"]) == (
            app_id,
            env_id,
        )
