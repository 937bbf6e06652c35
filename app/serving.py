"""`python -m app serve`: take the port, start (or join) the database, migrate, run uvicorn —
one process, or a supervisor and WORKERS processes — and stop the embedded PostgreSQL on the
way out, whichever signal ended the run (app/signals.py)."""

import errno
import logging
import os
import signal
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from app import db as database
from app import embedded, logs, signals
from app.main import create_app
from app.services.admin_cli import UserError
from app.settings import Settings, get_settings

log = logging.getLogger("uvicorn.error")


def serve(settings: Settings) -> None:
    # JSON lines from the start (migrations, the embedded server); uvicorn applies the same
    # config again in each worker process.
    log_config = logs.config(settings.log_level)
    logs.configure(settings.log_level)
    # The port first: when it is taken, nothing has been started that would need stopping.
    sock = listen(settings.host, settings.port)
    with sock, embedded.database_url(settings) as url:
        database.migrate(url)
        # Workers re-read settings from the environment: hand them the resolved URL, and the
        # migrations are done once here rather than once per worker. The cached settings go
        # too, else the app of a single process would start (and stop) the embedded server
        # a second time in its lifespan.
        os.environ["DATABASE_URL"] = url
        os.environ["MIGRATE_ON_START"] = "false"
        get_settings.cache_clear()
        print(f"Userkeep on http://{settings.host}:{settings.port}/docs", file=sys.stderr)
        config = uvicorn.Config(
            "app.serving:worker_app" if settings.workers > 1 else "app.main:create_app",
            factory=True,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=log_config,
            # app/middleware.py writes the access log, with the route template and the user.
            access_log=False,
            # uvicorn would otherwise rewrite the client address from X-Forwarded-For for any
            # loopback peer, before TRUSTED_PROXIES (app/security/client_ip.py) is consulted.
            proxy_headers=False,
        )
        if settings.workers > 1:
            Supervisor(config, sockets=[sock]).run()
        else:
            # uvicorn handles SIGINT and SIGTERM while it runs (SIGHUP becomes SIGTERM, see
            # app/signals.py), shuts down gracefully, then raises the signal again for the
            # handlers of app/signals.py, which unwind to the stop of the embedded server.
            uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """The listening socket uvicorn serves on, or a one-line UserError when it cannot be had.

    Listening at once, not only bound: on Linux two sockets with SO_REUSEADDR may both bind a
    port until one listens, and a second `serve` must be refused here, not after its start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a port left in TIME_WAIT by the previous run is free to take.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"{where} is already in use (another Userkeep, or another program): stop it, "
                f"or set PORT=… to a free port (PORT={port + 1} make run)"
            ) from None
        raise UserError(f"cannot listen on {where}: {exc.strerror}; check HOST and PORT") from None
    sock.set_inheritable(True)  # WORKERS>1: the workers serve this very socket
    return sock


class Supervisor(Multiprocess):
    """uvicorn's supervisor of WORKERS processes, for which SIGHUP means "restart the workers".
    Here it is a closed terminal, and ends the run like SIGTERM: the workers are stopped
    gracefully, then the embedded server. Under `nohup` it is ignored."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        # Before uvicorn puts its own handler on every signal it knows.
        self._nohup = signals.ignored(signal.SIGHUP)
        super().__init__(config, sockets)

    def handle_hup(self) -> None:
        if self._nohup:
            return
        log.info("Received SIGHUP, exiting.")
        self.should_exit.set()


def worker_app() -> FastAPI:
    """The app in one of WORKERS processes. A closed terminal sends SIGHUP to every process of
    its job, workers included; they leave it to the supervisor, which ends them with SIGTERM
    (gracefully) for the same signal, rather than die with their requests half answered."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return create_app()
