"""The docs pages in headless Chromium with the network off, driven as a reader would
(tools/docs_checks.py): Swagger UI renders and "Try it out" signs up, authorizes and reads
GET /v1/auth/me; ReDoc renders and searches; no request leaves the app, none fails, no console
error, no CSP violation. The app runs as `python -m app serve` on the suite's database.

Skipped where Debian's `chromium` is not installed; `make docs-offline` runs the same checks
on a database of its own and prints what it saw."""

from pathlib import Path

import pytest

from tests.process_support import free_port, process_env, serving
from tools.cdp import CHROMIUM, SITE, chromium
from tools.docs_checks import check_pages

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)


async def test_docs_pages_work_in_a_browser_without_network(database_url: str) -> None:
    env = process_env(DATABASE_URL=database_url, LOG_LEVEL="warning", REDIS_URL="")
    with serving(env, free_port()) as base, chromium(offline=True) as endpoint:
        reports = await check_pages(endpoint, base.replace("127.0.0.1", SITE))
    seen = "\n".join(line for report in reports for line in report.lines())
    assert not [problem for report in reports for problem in report.problems], seen
    swagger, redoc = reports
    assert any("GET /v1/auth/me answered 200" in line for line in swagger.findings), seen
    assert any("search for 'signup'" in line for line in redoc.findings), seen
