"""`python -m app import-users FILE.jsonl`: the bulk import for files of any size.

The file is read a line at a time (never whole), checked row by row (services/user_import),
and written in batches of user_import.BATCH_SIZE, each one transaction: a failure or Ctrl-C
loses at most the batch in flight, and running the file again finishes the job (every row
already imported is then `skipped`). Progress goes to stderr on a terminal only; the summary
to stdout; errors by line number.
"""

import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import create_engine, session_factory
from app.errors import NotFound
from app.security.argon2_params import Argon2Bounds
from app.services import admin_auth, tenancy, user_import
from app.services.admin_cli import CLI, UserError
from app.services.user_import import ImportRow, OnConflict, Outcome, Target, Totals
from app.settings import Settings

SHOWN_ERRORS = 20  # on stderr; every one goes to --errors FILE
YIELD_EVERY = 50  # lines read between two looks at the batches being written
WRITERS = 2


@dataclass(frozen=True)
class Flight:
    """A batch being written: its task, its session, and its rows refused before writing."""

    task: "asyncio.Task[list[Outcome]]"
    db: AsyncSession
    refused: list[Outcome]


@dataclass
class Report:
    totals: Totals = field(default_factory=Totals)
    seconds: float = 0.0
    shown: int = 0

    def summary(self) -> str:
        t = self.totals
        rate = t.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"created {t.created}, updated {t.updated}, skipped {t.skipped}, errors {t.errors} "
            f"({t.rows} rows in {self.seconds:.1f} s, {rate:,.0f} rows/s)"
        )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        yield from enumerate(handle, start=1)


def _decode(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise user_import.RowError("not valid JSON") from None


async def import_file(
    url: str,
    settings: Settings,
    path: Path,
    *,
    app: str,
    env: str | None,
    on_conflict: OnConflict,
    errors_to: Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> Report:
    """Import every line of `path` into the app's environment, as the operator ("system")."""
    bounds = Argon2Bounds.from_settings(settings)
    engine = create_engine(url, settings)
    report = Report()
    started = time.monotonic()
    progress = err.isatty()
    errors_file: IO[str] | None = errors_to.open("w", encoding="utf-8") if errors_to else None
    try:
        factory = session_factory(engine)
        async with factory() as db:
            await tenancy.ensure_default_app(db)
            try:
                async with db.begin():
                    found = await admin_auth.resolve_app(db, admin_auth.SYSTEM, app)
                    environment = await admin_auth.resolve_env(db, found, env)
            except NotFound as exc:
                raise UserError(str(exc)) from None
            target = Target(environment, admin_auth.SYSTEM, CLI, on_conflict)

            def note(outcomes: list[Outcome]) -> None:
                report.totals.add(outcomes)
                for outcome in outcomes:
                    if outcome.status != "error":
                        continue
                    if errors_file is not None:
                        line = {"line": outcome.index, "error": outcome.error}
                        errors_file.write(json.dumps(line) + "\n")
                    if report.shown < SHOWN_ERRORS:
                        report.shown += 1
                        if progress:
                            err.write("\r\033[K")  # over the progress line
                        print(f"line {outcome.index}: {outcome.error}", file=err)

            # WRITERS batches are written at once, each on its own connection, while the next
            # is read and checked: the parsing (Python) and the writing (PostgreSQL: indexes
            # and the user_counts trigger, most of the cost) overlap on the cores.
            idle = [factory() for _ in range(WRITERS)]
            flying: deque[Flight] = deque()

            async def settle() -> None:
                flight = flying.popleft()
                try:
                    outcomes = await flight.task
                finally:
                    idle.append(flight.db)
                note(sorted([*flight.refused, *outcomes], key=lambda outcome: outcome.index))
                if progress:
                    _progress(err, report, started)

            async def launch(batch: list[tuple[int, ImportRow]], refused: list[Outcome]) -> None:
                if not idle:
                    await settle()
                writer = idle.pop()
                task = asyncio.create_task(user_import.write_batch(writer, target, batch))
                flying.append(Flight(task, writer, refused))

            batch: list[tuple[int, ImportRow]] = []
            refused: list[Outcome] = []
            try:
                for number, text in _lines(path):
                    if number % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # the batches in flight take their next step
                    if not text.strip():
                        continue
                    try:
                        batch.append((number, user_import.parse_row(_decode(text), bounds)))
                    except user_import.RowError as exc:
                        refused.append(Outcome(number, "error", error=str(exc)))
                    if len(batch) + len(refused) >= user_import.BATCH_SIZE:
                        await launch(batch, refused)
                        batch, refused = [], []
                await launch(batch, refused)
                while flying:
                    await settle()
            finally:
                for flight in flying:
                    flight.task.cancel()
                    with contextlib.suppress(BaseException):
                        await flight.task
                    idle.append(flight.db)
                for writer in idle:
                    await writer.close()
    finally:
        await engine.dispose()
        if errors_file is not None:
            errors_file.close()
    report.seconds = time.monotonic() - started
    if progress:
        err.write("\r\033[K")
    hidden = report.totals.errors - report.shown
    if hidden > 0:
        where = f"all in {errors_to}" if errors_to else "--errors FILE lists all"
        print(f"… and {hidden} more errors ({where})", file=err)
    print(report.summary(), file=out)
    return report


def _progress(err: TextIO, report: Report, started: float) -> None:
    """One line, rewritten in place: rows done, the split, the rate."""
    t, seconds = report.totals, time.monotonic() - started
    rate = t.rows / seconds if seconds > 0 else 0.0
    err.write(
        f"\r{t.rows:,} rows: {t.created:,} created, {t.updated:,} updated, {t.skipped:,} "
        f"skipped, {t.errors:,} errors ({rate:,.0f} rows/s)\033[K"
    )
    err.flush()
