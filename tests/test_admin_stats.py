"""GET /v1/admin/stats: the totals follow every change exactly, sign-ups per UTC day, active
users from session use, and whose stats a caller may read."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest

from app import clock
from app.ids import Prefix, new_id
from tests.admin_support import (
    auth,
    default_app,
    make_app,
    make_key,
    make_session,
    make_user,
)

STATS = "/v1/admin/stats"
USERS = "/v1/admin/users"


@dataclass
class Scene:
    tenant: tuple[str, str]
    admin: dict[str, str]
    admin_id: str


async def _scene(pg) -> Scene:
    tenant = await make_app(pg, "acme")
    admin_id = await make_user(pg, tenant, role="admin", email_verified=True)
    token, _ = await make_session(pg, admin_id)
    return Scene(tenant, auth(token), admin_id)


async def _stats(client, headers: dict[str, str], **params: str) -> dict:
    response = await client.get(STATS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


async def _totals(client, scene: Scene) -> dict:
    users: dict = (await _stats(client, scene.admin))["users"]
    return users


def _today() -> date:
    return clock.now().astimezone(UTC).date()


# ---- totals ---------------------------------------------------------------------------------


async def test_totals_count_live_verified_banned_and_deleted_users(client, pg):
    scene = await _scene(pg)  # the admin: live and verified
    now = clock.now()
    await make_user(pg, scene.tenant, email_verified=True)
    await make_user(pg, scene.tenant)
    await make_user(pg, scene.tenant, banned=True)
    await make_user(pg, scene.tenant, banned=True, ban_expires=now + timedelta(days=1))
    await make_user(pg, scene.tenant, banned=True, ban_expires=now - timedelta(seconds=1))
    await make_user(pg, scene.tenant, email_verified=True, banned=True, deleted_at=now)
    body = await _stats(client, scene.admin)
    assert body["app_id"] == scene.tenant[0] and body["env_id"] == scene.tenant[1]
    assert body["users"] == {"total": 6, "verified": 2, "banned": 2, "deleted": 1}
    assert datetime.fromisoformat(body["as_of"]) <= clock.now()


async def test_totals_follow_verify_ban_delete_restore_and_purge(client, pg):
    scene = await _scene(pg)
    user_id = await make_user(pg, scene.tenant)
    assert await _totals(client, scene) == {"total": 2, "verified": 1, "banned": 0, "deleted": 0}

    url = f"{USERS}/{user_id}"
    assert (
        await client.patch(url, json={"email_verified": True}, headers=scene.admin)
    ).status_code == 200
    assert await _totals(client, scene) == {"total": 2, "verified": 2, "banned": 0, "deleted": 0}

    assert (
        await client.post(f"{url}/ban", json={"expires_in": 3600}, headers=scene.admin)
    ).status_code == 200
    assert (await _totals(client, scene))["banned"] == 1
    clock.advance(timedelta(hours=1, seconds=1))  # the ban ends by its clock, with no write
    scene.admin = auth((await make_session(pg, scene.admin_id))[0])
    assert (await _totals(client, scene))["banned"] == 0

    assert (await client.delete(url, headers=scene.admin)).status_code == 200
    assert await _totals(client, scene) == {"total": 1, "verified": 1, "banned": 0, "deleted": 1}
    assert (await client.post(f"{url}/restore", headers=scene.admin)).status_code == 200
    assert await _totals(client, scene) == {"total": 2, "verified": 2, "banned": 0, "deleted": 0}
    assert (await client.delete(url, headers=scene.admin)).status_code == 200
    assert (await client.post(f"{url}/purge", headers=scene.admin)).status_code == 200
    assert await _totals(client, scene) == {"total": 1, "verified": 1, "banned": 0, "deleted": 0}


async def test_twenty_concurrent_creations_are_all_counted(client, pg):
    scene = await _scene(pg)
    responses = await asyncio.gather(
        *(
            client.post(
                USERS,
                json={"email": f"racer{i}@example.com", "email_verified": i % 2 == 0},
                headers=scene.admin,
            )
            for i in range(20)
        )
    )
    assert [r.status_code for r in responses] == [201] * 20
    body = await _stats(client, scene.admin)
    assert body["users"] == {"total": 21, "verified": 11, "banned": 0, "deleted": 0}
    assert body["signups_per_day"][-1] == {"date": _today().isoformat(), "count": 21}


# ---- sign-ups per day -----------------------------------------------------------------------


async def test_signups_per_day_cover_thirty_days_with_zeros(client, pg):
    scene = await _scene(pg)  # the admin signed up today
    now = clock.now()
    await make_user(pg, scene.tenant, created_at=now - timedelta(days=1))
    await make_user(pg, scene.tenant, created_at=now - timedelta(days=1))
    await make_user(pg, scene.tenant, created_at=now - timedelta(days=29))
    await make_user(pg, scene.tenant, created_at=now - timedelta(days=30))  # out of the window
    days = (await _stats(client, scene.admin))["signups_per_day"]
    today = _today()
    assert [day["date"] for day in days] == [
        (today - timedelta(days=29 - i)).isoformat() for i in range(30)
    ]
    counts = [day["count"] for day in days]
    assert counts[-1] == 1 and counts[-2] == 2 and counts[0] == 1
    assert sum(counts) == 4


async def test_signups_stay_counted_when_the_user_is_deleted(client, pg):
    scene = await _scene(pg)
    user_id = await make_user(pg, scene.tenant)
    assert (await client.delete(f"{USERS}/{user_id}", headers=scene.admin)).status_code == 200
    assert (await _stats(client, scene.admin))["signups_per_day"][-1]["count"] == 2


async def test_signups_move_to_the_next_day_with_the_clock(client, pg):
    scene = await _scene(pg)
    midnight = datetime.combine(_today() + timedelta(days=1), time(), UTC)
    clock.advance(midnight - clock.now() + timedelta(seconds=1))
    await make_user(pg, scene.tenant)
    scene.admin = auth((await make_session(pg, scene.admin_id))[0])
    counts = [day["count"] for day in (await _stats(client, scene.admin))["signups_per_day"]]
    assert counts[-2:] == [1, 1]


# ---- active users ---------------------------------------------------------------------------


async def _use(client, pg, user_id: str) -> None:
    """A request with a fresh session of the user, more than a minute after its start (the
    last-used stamp, and so the activity, is written at most once a minute)."""
    token, _ = await make_session(pg, user_id)
    clock.advance(timedelta(minutes=2))
    assert (await client.get("/v1/auth/me", headers=auth(token))).status_code == 200


async def test_active_users_come_from_session_use(client, pg):
    scene = await _scene(pg)
    # Read with an API key: an admin's own requests would be session use too.
    key = auth((await make_key(pg, scene.tenant[0]))[0])
    ada = await make_user(pg, scene.tenant)
    bob = await make_user(pg, scene.tenant)
    await make_user(pg, scene.tenant)  # never active
    await _use(client, pg, ada)
    await _use(client, pg, ada)  # twice in a day: one user
    await _use(client, pg, bob)
    assert (await _stats(client, key))["active_users"] == {"day": 2, "week": 2, "month": 2}

    clock.advance(timedelta(days=3))
    await _use(client, pg, bob)
    assert (await _stats(client, key))["active_users"] == {"day": 1, "week": 2, "month": 2}
    clock.advance(timedelta(days=10))
    assert (await _stats(client, key))["active_users"] == {"day": 0, "week": 0, "month": 2}
    clock.advance(timedelta(days=17))  # bob's last use was 27 days ago, ada's 30
    assert (await _stats(client, key))["active_users"] == {"day": 0, "week": 0, "month": 1}
    clock.advance(timedelta(days=3))
    assert (await _stats(client, key))["active_users"] == {"day": 0, "week": 0, "month": 0}


async def test_the_activity_row_is_written_once_a_user_a_day(client, pg):
    scene = await _scene(pg)
    ada = await make_user(pg, scene.tenant)
    await _use(client, pg, ada)
    first = await pg.fetchval("SELECT last_active_at FROM user_activity WHERE user_id = $1", ada)
    await _use(client, pg, ada)
    assert (
        await pg.fetchval("SELECT last_active_at FROM user_activity WHERE user_id = $1", ada)
        == first
    )
    clock.advance(timedelta(days=1))
    await _use(client, pg, ada)
    later = await pg.fetchval("SELECT last_active_at FROM user_activity WHERE user_id = $1", ada)
    assert later > first
    # Ada moved from yesterday's count to today's: one user, counted once.
    days = await pg.fetch("SELECT day, sum(users) AS n FROM user_active_days GROUP BY day")
    assert {row["day"]: row["n"] for row in days} == {
        first.astimezone(UTC).date(): 0,
        later.astimezone(UTC).date(): 1,
    }


async def test_an_impersonation_is_not_the_user_being_active(client, pg):
    scene = await _scene(pg)
    ada = await make_user(pg, scene.tenant)
    response = await client.post(
        f"{USERS}/{ada}/impersonate", json={"reason": "support"}, headers=scene.admin
    )
    token = response.json()["session_token"]
    clock.advance(timedelta(minutes=2))
    assert (await client.get("/v1/auth/me", headers=auth(token))).status_code == 200
    assert await pg.fetchval("SELECT count(*) FROM user_activity WHERE user_id = $1", ada) == 0


async def test_a_purged_user_leaves_the_activity_table(client, pg):
    scene = await _scene(pg)
    ada = await make_user(pg, scene.tenant)
    await _use(client, pg, ada)
    assert await pg.fetchval("SELECT sum(users) FROM user_active_days") == 1
    await pg.execute("DELETE FROM users WHERE id = $1", ada)
    assert await pg.fetchval("SELECT count(*) FROM user_activity WHERE user_id = $1", ada) == 0
    assert await pg.fetchval("SELECT sum(users) FROM user_active_days") == 0


# ---- whose stats ----------------------------------------------------------------------------


async def test_another_apps_users_and_activity_are_not_counted(client, pg):
    scene = await _scene(pg)
    globex = await make_app(pg, "globex")
    stranger = await make_user(pg, globex, email_verified=True)
    await make_user(pg, globex, banned=True, deleted_at=clock.now())
    await _use(client, pg, stranger)
    body = await _stats(client, auth((await make_key(pg, scene.tenant[0]))[0]))
    assert body["users"] == {"total": 1, "verified": 1, "banned": 0, "deleted": 0}
    assert sum(day["count"] for day in body["signups_per_day"]) == 1
    assert body["active_users"]["month"] == 0
    theirs = await _stats(client, auth((await make_key(pg, globex[0]))[0]))
    assert theirs["users"] == {"total": 1, "verified": 1, "banned": 0, "deleted": 1}
    assert theirs["active_users"]["month"] == 1


async def test_another_environment_is_counted_apart(client, pg):
    scene = await _scene(pg)
    staging = new_id(Prefix.ENV)
    await pg.execute(
        "INSERT INTO environments (id, app_id, slug, name) VALUES ($1, $2, 'staging', 'Staging')",
        staging,
        scene.tenant[0],
    )
    await make_user(pg, (scene.tenant[0], staging))
    await make_user(pg, (scene.tenant[0], staging))
    body = await _stats(client, scene.admin, env_id="staging")
    assert body["env_id"] == staging and body["users"]["total"] == 2
    assert (await _stats(client, scene.admin))["users"]["total"] == 1


async def test_an_api_key_reads_its_own_app(client, pg):
    scene = await _scene(pg)
    secret, _ = await make_key(pg, scene.tenant[0])
    body = await _stats(client, auth(secret))
    assert body["app_id"] == scene.tenant[0] and body["users"]["total"] == 1
    await make_app(pg, "globex")
    response = await client.get(STATS, params={"app_id": "globex"}, headers=auth(secret))
    assert response.status_code == 404 and response.json()["error"] == "app not found"


async def test_a_root_admin_reads_any_app(client, pg):
    scene = await _scene(pg)
    root = await make_user(pg, await default_app(pg), role="admin")
    token, _ = await make_session(pg, root)
    body = await _stats(client, auth(token), app_id="acme")
    assert body["app_id"] == scene.tenant[0] and body["users"]["total"] == 1
    assert (await _stats(client, auth(token)))["users"]["total"] == 1  # the default app: root


@pytest.mark.parametrize(
    ("kind", "status"), [("anonymous", 401), ("user", 403)], ids=["anonymous", "plain-user"]
)
async def test_only_admins_and_keys_read_stats(client, pg, kind, status):
    scene = await _scene(pg)
    headers = {}
    if kind == "user":
        headers = auth((await make_session(pg, await make_user(pg, scene.tenant)))[0])
    response = await client.get(STATS, headers=headers)
    assert response.status_code == status


@pytest.mark.parametrize(
    "params",
    [{"app_id": "aenv_01jh8x3k2ffq8s4y7h3b2n1m0p"}, {"env_id": "Not A Slug"}, {"extra": "1"}],
    ids=["wrong-prefix", "bad-env", "unknown-param"],
)
async def test_bad_parameters_are_422(client, pg, params):
    scene = await _scene(pg)
    response = await client.get(STATS, params=params, headers=scene.admin)
    assert response.status_code == 422 and response.json()["type"] == "validation_error"


async def test_an_unknown_environment_is_404(client, pg):
    scene = await _scene(pg)
    response = await client.get(STATS, params={"env_id": "nowhere"}, headers=scene.admin)
    assert response.status_code == 404


async def test_twenty_users_first_used_at_once_are_all_counted(client, pg):
    scene = await _scene(pg)
    key = auth((await make_key(pg, scene.tenant[0]))[0])
    user_tokens = [
        (await make_session(pg, await make_user(pg, scene.tenant)))[0] for _ in range(20)
    ]
    clock.advance(timedelta(minutes=2))
    responses = await asyncio.gather(
        *(client.get("/v1/auth/me", headers=auth(token)) for token in user_tokens)
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert (await _stats(client, key))["active_users"] == {"day": 20, "week": 20, "month": 20}
