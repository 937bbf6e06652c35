"""The e-mail flows' test rig: a real SMTP server (tests/smtp_support.py) and a job worker in
this process whose mailer sends to it, so a test follows a mail from the request that caused
it to the code and link a person would read."""

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage

from fastapi import FastAPI
from sqlalchemy import text

from app.services import jobs
from tests.conftest import make_settings
from tests.smtp_support import SmtpServer

CODE = re.compile(r"\b([0-9]{6})\b")
TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")
LINK = re.compile(r"(https?://\S+\?token=[A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Mail:
    to: str
    sender: str
    subject: str
    text: str
    html: str

    @classmethod
    def of(cls, message: EmailMessage) -> "Mail":
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None and html is not None, "a mail has a text and an HTML part"
        return cls(
            to=str(message["To"]),
            sender=str(message["From"]),
            subject=str(message["Subject"]),
            text=text.get_content(),
            html=html.get_content(),
        )

    @property
    def code(self) -> str:
        found = CODE.search(self.text)
        assert found, f"no code in {self.text!r}"
        return found.group(1)

    @property
    def token(self) -> str:
        found = TOKEN.search(self.text)
        assert found, f"no link token in {self.text!r}"
        return found.group(1)

    @property
    def link(self) -> str:
        found = LINK.search(self.text)
        assert found, f"no link in {self.text!r}"
        return found.group(1)


@dataclass
class Postbox:
    """What the SMTP server received, read as a person would."""

    server: SmtpServer | None  # None while SMTP is down
    worker: jobs.Worker

    def mails(self, to: str | None = None) -> list[Mail]:
        messages = self.server.messages if self.server is not None else []
        found = [Mail.of(message) for message in messages]
        return [mail for mail in found if to is None or mail.to == to]

    async def next_to(self, address: str, seen: int = 0, seconds: float = 20) -> Mail:
        """The mail to `address` after the first `seen` ones (waits for the worker)."""
        deadline = time.monotonic() + seconds
        while len(found := self.mails(address)) <= seen:
            assert time.monotonic() < deadline, f"no mail to {address}; got {self.mails()}"
            await asyncio.sleep(0.02)
        return found[seen]

    async def settle(self, app: FastAPI, seconds: float = 20) -> None:
        """Wait until no mail job is queued or running (every job ran, or failed)."""
        deadline = time.monotonic() + seconds
        async with app.state.sessions() as db:
            while True:
                async with db.begin():
                    busy = (
                        await db.execute(
                            text(
                                "SELECT count(*) FROM jobs j LEFT JOIN pgqueuer q ON q.id = j.id "
                                "WHERE j.status = 'running' OR (j.status = 'queued' "
                                "AND coalesce(q.execute_after <= now(), true))"
                            )
                        )
                    ).scalar_one()
                if not busy:
                    return
                assert time.monotonic() < deadline, "mail jobs still queued"
                await asyncio.sleep(0.02)


@asynccontextmanager
async def postbox(
    app: FastAPI, database_url: str, server: SmtpServer | None, port: int | None = None
) -> AsyncIterator[Postbox]:
    """A worker sending this app's mails to `server` (or to `port`, where nothing listens
    until the test starts a server there)."""
    worker_settings = make_settings(
        database_url,
        mail_url=f"smtp://127.0.0.1:{server.port if server else port}",
        jobs_poll_interval=0.1,
    )
    worker = jobs.Worker(worker_settings, database_url, app.state.sessions, concurrency=4)
    worker.start()
    try:
        yield Postbox(server, worker)
    finally:
        await worker.stop()
