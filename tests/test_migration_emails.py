"""Migration 0008 normalises the e-mail addresses stored before normalisation, except where two
live accounts turn out to be one mailbox: those are left alone and reported."""

import asyncio
import logging
import unicodedata
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from app import db as database
from app.ids import Prefix, new_id

NFC = unicodedata.normalize("NFC", "josé@exämple.com")
NFD = unicodedata.normalize("NFD", NFC)


@pytest.fixture
async def at_0007(database_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated up to the revision before the normalisation."""
    name = f"userkeep_mig_{uuid.uuid4().hex[:12]}"
    server = database._asyncpg_args(database_url, database="postgres")
    conn = await asyncpg.connect(**server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(command.upgrade, database.alembic_config(url), "0007")
        yield url
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_existing_addresses_are_normalised_and_clashes_reported(at_0007, caplog):
    conn = await asyncpg.connect(**database._asyncpg_args(at_0007))
    try:
        app_id, env_id = new_id(Prefix.APP), new_id(Prefix.ENV)
        await conn.execute("INSERT INTO apps (id, slug, name) VALUES ($1, 'm', 'M')", app_id)
        await conn.execute(
            "INSERT INTO environments (id, app_id, slug, name, is_default) "
            "VALUES ($1, $2, 'production', 'Production', true)",
            env_id,
            app_id,
        )

        async def user(email: str, deleted: bool = False) -> str:
            user_id = new_id(Prefix.USER)
            await conn.execute(
                "INSERT INTO users (id, app_id, env_id, email, deleted_at) "
                "VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END)",
                user_id,
                app_id,
                env_id,
                email,
                deleted,
            )
            return user_id

        lone_nfd = await user(unicodedata.normalize("NFD", "zoë@example.com"))
        upper_domain = await user("Grace@EXAMPLE.Com")
        ascii_kept = await user("plain@example.com")
        live_nfc = await user(NFC)
        clashing_nfd = await user(NFD)  # the same mailbox as live_nfc
        deleted_nfd = await user(NFD, deleted=True)

        with caplog.at_level(logging.WARNING, logger="userkeep.migrations"):
            await asyncio.to_thread(database.migrate, at_0007)

        emails = {r["id"]: r["email"] for r in await conn.fetch("SELECT id, email FROM users")}
        assert emails[lone_nfd] == unicodedata.normalize("NFC", "zoë@example.com")
        assert emails[upper_domain] == "Grace@example.com"
        assert emails[ascii_kept] == "plain@example.com"
        assert emails[live_nfc] == NFC
        assert emails[clashing_nfd] == NFD  # left for an operator to resolve
        assert emails[deleted_nfd] == NFC  # a deleted row holds no live address
        reported = [r.getMessage() for r in caplog.records if r.name == "userkeep.migrations"]
        assert any(clashing_nfd in m and live_nfc in m for m in reported), reported
    finally:
        await conn.close()
