"""GET /v1/admin/users: filters, sorting, totals (exact, or capped at the count limit), offset
and keyset paging, bad input, and the indexes that keep it fast."""

import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.dialects.postgresql import asyncpg as pg_dialect

from app import clock
from app.ids import Prefix, new_id
from app.main import create_app
from app.services import admin, cursors
from tests.admin_support import auth, make_admin, make_app, make_user
from tests.conftest import make_settings

LIST = "/v1/admin/users"


async def _acme(pg) -> tuple[tuple[str, str], dict[str, str]]:
    tenant = await make_app(pg, "acme")
    return tenant, auth(await make_admin(pg, tenant, email="boss@acme.test"))


async def _ids(client, headers, **params) -> list[str]:
    response = await client.get(LIST, params={"limit": 100, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return [user["id"] for user in response.json()["users"]]


async def test_text_filters_are_case_insensitive_partial_matches(client, pg):
    tenant, admin_headers = await _acme(pg)
    ada = await make_user(
        pg, tenant, email="Ada.Lovelace@Example.com", username="countess", name="Ada King"
    )
    grace = await make_user(pg, tenant, email="grace@navy.mil", phone="+14155550199")
    assert await _ids(client, admin_headers, email="LOVELACE") == [ada]
    assert await _ids(client, admin_headers, username="COUNT") == [ada]
    assert await _ids(client, admin_headers, phone="555019") == [grace]
    assert await _ids(client, admin_headers, search="ada k") == [ada]  # the name
    assert await _ids(client, admin_headers, search="NAVY") == [grace]  # the e-mail
    assert await _ids(client, admin_headers, search="+1415") == [grace]  # the phone
    assert await _ids(client, admin_headers, search="nobody") == []


async def test_search_matches_within_one_field_never_across_two(client, pg):
    """`search` runs over the fields joined by newlines (one index): a term never matches the
    end of one field glued to the start of the next, and a term holding a newline still finds
    a name that holds one."""
    tenant, admin_headers = await _acme(pg)
    ada = await make_user(pg, tenant, email="ada@example.io", username="countess", name="Ada")
    poem = await make_user(pg, tenant, email="poet@example.com", name="Line one\nLine two")
    assert await _ids(client, admin_headers, search="example.io") == [ada]
    assert await _ids(client, admin_headers, search="iocountess") == []  # e-mail + username
    assert await _ids(client, admin_headers, search="io\ncountess") == []
    assert await _ids(client, admin_headers, search="countessada") == []  # username + name
    assert await _ids(client, admin_headers, search="ONE\nline") == [poem]
    assert await _ids(client, admin_headers, search="line two") == [poem]


async def test_like_wildcards_in_input_are_literal(client, pg):
    tenant, admin_headers = await _acme(pg)
    underscore = await make_user(pg, tenant, email="a_b@example.com")
    await make_user(pg, tenant, email="axb@example.com")
    percent = await make_user(pg, tenant, email="x@example.com", name="100% real")
    await make_user(pg, tenant, email="y@example.com", name="1000 real")
    backslash = await make_user(pg, tenant, email="z@example.com", name="back\\slash")
    await make_user(pg, tenant, email="w@example.com", name="backslash")
    assert await _ids(client, admin_headers, search="a_b") == [underscore]
    assert await _ids(client, admin_headers, email="_b@") == [underscore]
    assert await _ids(client, admin_headers, search="0%") == [percent]
    assert await _ids(client, admin_headers, search="%") == [percent]
    assert await _ids(client, admin_headers, search="k\\s") == [backslash]


async def test_flag_role_date_env_and_deleted_filters(client, pg):
    tenant, admin_headers = await _acme(pg)
    now = clock.now()
    staging = "aenv_01jdk3v7m6e8x9q2w4r5t6y7z8"
    await pg.execute(
        "INSERT INTO environments (id, app_id, slug, name) VALUES ($1, $2, 'staging', 'S')",
        staging,
        tenant[0],
    )
    verified = await make_user(pg, tenant, email_verified=True, created_at=now - timedelta(days=3))
    moderator = await make_user(pg, tenant, role="moderator", created_at=now - timedelta(days=2))
    deleted = await make_user(pg, tenant, deleted_at=now, created_at=now - timedelta(days=1))
    in_staging = await make_user(pg, (tenant[0], staging))
    boss = await pg.fetchval("SELECT id FROM users WHERE email = 'boss@acme.test'")

    everyone = {verified, moderator, in_staging, boss}
    assert set(await _ids(client, admin_headers)) == everyone
    assert set(await _ids(client, admin_headers, include_deleted="true")) == everyone | {deleted}
    assert await _ids(client, admin_headers, email_verified="true") == [verified]
    assert verified not in await _ids(client, admin_headers, email_verified="false")
    assert await _ids(client, admin_headers, role="moderator") == [moderator]
    assert await _ids(client, admin_headers, env_id="staging") == [in_staging]
    assert await _ids(client, admin_headers, env_id=staging) == [in_staging]
    window = {
        "created_after": (now - timedelta(days=2)).isoformat(),
        "created_before": (now - timedelta(hours=1)).isoformat(),
        "include_deleted": "true",
    }
    assert await _ids(client, admin_headers, **window) == [deleted, moderator]
    unknown_env = await client.get(LIST, params={"env_id": "qa"}, headers=admin_headers)
    assert unknown_env.status_code == 404


async def test_unfiltered_total_follows_every_change_of_the_user_set(client, pg):
    """The unfiltered total comes from counts kept by triggers (migration 0004); it must equal
    a real count after sign-ups, other apps' users, env moves, soft delete, restore and purge."""
    tenant, admin_headers = await _acme(pg)
    staging = new_id(Prefix.ENV)
    await pg.execute(
        "INSERT INTO environments (id, app_id, slug, name, is_default) "
        "VALUES ($1, $2, 'staging', 'Staging', false)",
        staging,
        tenant[0],
    )
    other = await make_app(pg, "other")

    async def totals() -> tuple[int, int, int]:
        async def one(**params: str) -> int:
            response = await client.get(LIST, params=params, headers=admin_headers)
            assert response.status_code == 200, response.text
            return int(response.json()["total"])

        return (await one(), await one(include_deleted="true"), await one(env_id="staging"))

    async def truth() -> tuple[int, int, int]:
        live = await pg.fetchval(
            "SELECT count(*) FROM users WHERE app_id = $1 AND deleted_at IS NULL", tenant[0]
        )
        every = await pg.fetchval("SELECT count(*) FROM users WHERE app_id = $1", tenant[0])
        staged = await pg.fetchval(
            "SELECT count(*) FROM users WHERE env_id = $1 AND deleted_at IS NULL", staging
        )
        return live, every, staged

    ids = [await make_user(pg, tenant) for _ in range(5)]
    await make_user(pg, (tenant[0], staging))
    await make_user(pg, other)
    assert await totals() == await truth() == (7, 7, 1)
    for user_id in ids[:2]:
        response = await client.delete(f"{LIST}/{user_id}", headers=admin_headers)
        assert response.status_code == 200
    assert await totals() == await truth() == (5, 7, 1)
    assert (await client.post(f"{LIST}/{ids[0]}/restore", headers=admin_headers)).status_code == 200
    assert (await client.post(f"{LIST}/{ids[1]}/purge", headers=admin_headers)).status_code == 200
    assert await totals() == await truth() == (6, 6, 1)
    await pg.execute("UPDATE users SET env_id = $1 WHERE id = $2", staging, ids[2])
    await pg.execute("UPDATE users SET name = 'renamed' WHERE id = $1", ids[3])
    assert await totals() == await truth() == (6, 6, 2)
    # A filter, even one matching everyone, is counted from the rows themselves.
    response = await client.get(LIST, params={"search": "@"}, headers=admin_headers)
    assert response.json()["total"] == 6


async def test_total_is_true_count_and_offset_pages(client, pg):
    tenant, admin_headers = await _acme(pg)
    now = clock.now()
    for i in range(24):
        await make_user(pg, tenant, name=f"member {i}", created_at=now - timedelta(minutes=i))
    seen: list[str] = []
    for offset in (0, 10, 20):
        response = await client.get(
            LIST, params={"search": "member", "limit": 10, "offset": offset}, headers=admin_headers
        )
        page = response.json()
        assert page["total"] == 24 and page["total_exact"] is True
        assert page["limit"] == 10 and page["offset"] == offset
        seen += [u["id"] for u in page["users"]]
    assert len(seen) == len(set(seen)) == 24
    names = [
        u["name"]
        for u in (
            await client.get(LIST, params={"search": "member", "limit": 3}, headers=admin_headers)
        ).json()["users"]
    ]
    assert names == ["member 0", "member 1", "member 2"]  # newest first by default


async def test_total_stops_at_the_count_limit_unless_count_exact(database_url, pg):
    """Past ADMIN_COUNT_LIMIT matches the total is that limit, flagged inexact (a lower bound,
    never an overcount); count=exact counts them all; the unfiltered total stays exact."""
    capped = create_app(make_settings(database_url, admin_count_limit=5))
    async with capped.router.lifespan_context(capped):
        transport = httpx.ASGITransport(app=capped)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tenant, admin_headers = await _acme(pg)
            members = [await make_user(pg, tenant, name=f"member {i}") for i in range(8)]
            for i in range(5):
                await make_user(pg, tenant, name=f"other {i}")

            async def listing(**params: Any) -> dict[str, Any]:
                response = await client.get(LIST, params=params, headers=admin_headers)
                assert response.status_code == 200, response.text
                return dict(response.json())

            broad = await listing(search="member", limit=100)
            assert (broad["total"], broad["total_exact"]) == (5, False)
            assert sorted(u["id"] for u in broad["users"]) == sorted(members)  # the page is whole
            exact = await listing(search="member", count="exact", limit=2)
            assert (exact["total"], exact["total_exact"]) == (8, True)
            at_limit = await listing(search="other")
            assert (at_limit["total"], at_limit["total_exact"]) == (5, True)
            under = await listing(search="member 7")
            assert (under["total"], under["total_exact"]) == (1, True)
            everyone = await listing(limit=1)  # from the trigger-kept counts, past the limit
            assert (everyone["total"], everyone["total_exact"]) == (14, True)
            verified = await listing(email_verified="false", limit=1)
            assert (verified["total"], verified["total_exact"]) == (5, False)


async def _walk(client, headers, limit: int, on_page=None, **params) -> list[str]:
    """Every page through next_cursor; `on_page(page_number)` runs between pages."""
    ids: list[str] = []
    cursor = None
    for page_number in range(1000):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(LIST, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [user["id"] for user in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
        if on_page is not None:
            await on_page(page_number)
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_cursor_neither_skips_nor_repeats_while_users_sign_up(client, pg, order):
    tenant, admin_headers = await _acme(pg)
    base = clock.now() - timedelta(hours=1)
    original = set()
    async with pg.transaction():
        for i in range(40):
            # Groups of four share a timestamp, so the id tie-break is exercised.
            original.add(await make_user(pg, tenant, created_at=base + timedelta(seconds=i // 4)))
    original.add(await pg.fetchval("SELECT id FROM users WHERE email = 'boss@acme.test'"))
    newcomers: list[str] = []

    async def sign_up_more(page_number: int) -> None:
        for _ in range(3):
            newcomers.append(await make_user(pg, tenant, created_at=clock.now()))
        # ...and one with the very timestamp of users already listed, or still to come.
        await make_user(pg, tenant, created_at=base + timedelta(seconds=5))

    ids = await _walk(client, admin_headers, 7, sign_up_more, sort_order=order)
    assert len(ids) == len(set(ids)), "a user was repeated"
    assert original <= set(ids), "a user was skipped"
    if order == "asc":
        # Newcomers sort after everyone listed so far: an ascending walk reaches them all.
        assert set(newcomers) <= set(ids)
    else:
        assert not set(newcomers) & set(ids)


@pytest.mark.parametrize("sort_by", ["created_at", "updated_at", "email", "name", "username"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_cursor_pages_match_one_big_page_for_every_sort(client, pg, sort_by, order):
    tenant, admin_headers = await _acme(pg)
    rng = random.Random(7)
    now = clock.now()
    async with pg.transaction():
        for i in range(23):
            when = now - timedelta(minutes=rng.randrange(5))  # many ties
            await make_user(
                pg,
                tenant,
                email=f"{rng.choice('abAB')}{i}@example.com",
                name=rng.choice([None, "Ann", "ann", "Bob", "Émile"]),
                username=rng.choice([None, f"u{rng.randrange(3)}x{i}"]),
                created_at=when,
                updated_at=when,
            )
    params = {"sort_by": sort_by, "sort_order": order}
    whole = await _ids(client, admin_headers, **params)
    assert len(whole) == 24
    assert await _walk(client, admin_headers, 5, **params) == whole
    offsets = []
    for offset in range(0, 24, 5):
        offsets += await _ids(client, admin_headers, limit=5, offset=offset, **params)
    assert offsets == whole


async def test_sort_by_name_puts_unnamed_last_when_descending(client, pg):
    tenant, admin_headers = await _acme(pg)
    await pg.execute("UPDATE users SET name = 'Zed'")
    bea = await make_user(pg, tenant, name="bea")
    ann = await make_user(pg, tenant, name="Ann")
    nameless = await make_user(pg, tenant)
    ids = await _ids(client, admin_headers, sort_by="name", sort_order="asc")
    assert ids[:3] == [nameless, ann, bea]  # case-insensitive; no name sorts as ""
    ids = await _ids(client, admin_headers, sort_by="name")
    assert ids[-3:] == [bea, ann, nameless]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"sort_by": "password_hash"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
        ({"created_after": "2026-01-01T00:00:00"}, "created_after"),  # no offset
        ({"created_before": "yesterday"}, "created_before"),
        ({"app_id": "aapp_nope"}, "app_id"),
        ({"app_id": "Not A Slug"}, "app_id"),
        ({"env_id": "ausr_01jdk3v7m6e8x9q2w4r5t6y7z8"}, "env_id"),
        ({"banned": "maybe"}, "banned"),
        ({"search": "x" * 257}, "search"),
        ({"search": ""}, "search"),
        ({"role": "Admin!"}, "role"),
        ({"colour": "blue"}, "colour"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": "bm90IGpzb24"}, "cursor"),  # base64 of "not json"
        (
            {
                "cursor": cursors.encode(
                    {
                        "k": "created_at",
                        "o": "desc",
                        "v": "9999-12-31T23:59:59-10:00",
                        "id": "ausr_01jdk3v7m6e8x9q2w4r5t6y7z8",
                    }
                )
            },
            "cursor",
        ),
        (
            {
                "cursor": cursors.encode(
                    {
                        "k": "created_at",
                        "o": "desc",
                        "v": 5,
                        "id": "ausr_01jdk3v7m6e8x9q2w4r5t6y7z8",
                    }
                )
            },
            "cursor",
        ),
        (
            {
                "cursor": cursors.encode(
                    {
                        "k": "created_at",
                        "o": "desc",
                        "v": "2026-01-01T00:00:00Z",
                        "id": "robert'); DROP TABLE users;--",
                    }
                )
            },
            "cursor",
        ),
        ({"created_after": "9999-12-31T23:59:59-10:00"}, "created_after"),  # past UTC's end
        ({"search": "a\x00b"}, "search"),
        ({"count": "estimated"}, "count"),
    ],
)
async def test_bad_list_input_is_422_envelope(client, pg, params, field):
    _, admin_headers = await _acme(pg)
    response = await client.get(LIST, params=params, headers=admin_headers)
    body = response.json()
    assert response.status_code == 422, body
    assert body["type"] == "validation_error" and body["code"] == 422
    assert field in {detail["field"] for detail in body["details"]}, body


async def test_cursor_is_bound_to_its_sort_and_excludes_offset(client, pg):
    tenant, admin_headers = await _acme(pg)
    for _ in range(3):
        await make_user(pg, tenant)
    page = (await client.get(LIST, params={"limit": 1}, headers=admin_headers)).json()
    cursor = page["next_cursor"]
    other_sort = await client.get(
        LIST, params={"limit": 1, "cursor": cursor, "sort_by": "email"}, headers=admin_headers
    )
    assert other_sort.status_code == 422 and other_sort.json()["details"][0]["field"] == "cursor"
    both = await client.get(
        LIST, params={"limit": 1, "cursor": cursor, "offset": 1}, headers=admin_headers
    )
    assert both.status_code == 422 and both.json()["details"][0]["field"] == "offset"


def _explain(statement) -> str:
    compiled = statement.compile(
        dialect=pg_dialect.dialect(), compile_kwargs={"literal_binds": True}
    )
    return f"EXPLAIN {compiled}"


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ({"sort_by": "created_at"}, "ix_users_sort_created"),
        ({"sort_by": "updated_at", "sort_order": "asc"}, "ix_users_sort_updated"),
        ({"sort_by": "email"}, "ix_users_sort_email"),
        ({"sort_by": "name"}, "ix_users_sort_name"),
        ({"sort_by": "username", "sort_order": "asc"}, "ix_users_sort_username"),
    ],
)
async def test_pages_are_index_range_scans_in_sort_order(pg, query, index):
    """The page statement the service sends matches the (app_id, key, id) index of its sort
    (no sort step), also for a cursor page — the expressions of SORT_KEYS and migration 0002
    agree."""
    user_query = admin.UserQuery(**query)
    conditions = admin.user_filters(user_query, "aapp_x", None, clock.now())
    async with pg.transaction():
        await pg.execute("SET LOCAL enable_seqscan = off")
        await pg.execute("SET LOCAL enable_sort = off")
        plan = "\n".join(
            row[0] for row in await pg.fetch(_explain(admin.page_statement(user_query, conditions)))
        )
    assert index in plan and "Sort" not in plan, plan


async def test_filters_can_use_their_indexes(pg):
    """Partial matches (LIKE '%…%' ESCAPE) are answerable from the pg_trgm indexes — `search`
    from the one over the four fields (migration 0006, whose expression admin.SEARCH_TEXT must
    repeat exactly) — banned=true from the partial index of banned users, role and
    email_verified from theirs (migration 0005): for the page, the full count and the capped
    count. On a few rows the planner
    prefers other indexes, so each case drops all but its own, inside a transaction that is
    rolled back; bench/ measures the real choice at a million users."""
    tenant = await make_app(pg, "acme")
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"search": "Love_Lace%"}, ["ix_users_search_trgm"]),
        ({"email": "love_lace%"}, ["ix_users_email_trgm"]),
        ({"username": "lovelace"}, ["ix_users_username_trgm"]),
        ({"phone": "+99999"}, ["ix_users_phone_trgm"]),
        ({"banned": True}, ["ix_users_banned"]),
        ({"role": "admin"}, ["ix_users_role"]),
        ({"email_verified": False}, ["ix_users_email_verified"]),
    ]
    for query, indexes in cases:
        tx = pg.transaction()
        await tx.start()
        try:
            others = await pg.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'users' "
                "AND NOT indexname = ANY($1::text[])",
                ["users_pkey", *indexes],
            )
            for row in others:
                await pg.execute(f'DROP INDEX "{row[0]}"')
            await pg.execute("SET LOCAL enable_seqscan = off")
            user_query = admin.UserQuery(**query)
            conditions = admin.user_filters(user_query, tenant[0], None, clock.now())
            for statement in (
                admin.count_statement(conditions),
                admin.count_statement(conditions, up_to=10_001),
                admin.page_statement(user_query, conditions),
            ):
                plan = "\n".join(row[0] for row in await pg.fetch(_explain(statement)))
                for index in indexes:
                    assert index in plan, plan
        finally:
            await tx.rollback()
