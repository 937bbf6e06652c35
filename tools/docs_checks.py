"""What a reader of the API docs does, in a real browser (tools/cdp.py), and what counts as
broken: used by tools/check_docs_offline.py and tests/test_docs_browser.py.

    /docs    Swagger UI renders: its operations are in the DOM. Then, through the UI itself
             (clicks and typed text, as a person would): POST /v1/auth/signup with "Try it out"
             answers 201, the session token from that answer goes into "Authorize", and
             GET /v1/auth/me with "Try it out" answers 200 with the new user's e-mail.
    /redoc   ReDoc renders: the API's title and its operations are in the DOM, and its search
             (run in a blob: worker) finds the sign-up operation.

On each page: every request went to the app itself (or was a data:/blob: URL) and succeeded,
and the console has no error: no Content-Security-Policy violation (also caught by a
`securitypolicyviolation` listener), no uncaught exception. Console warnings are kept as notes.
"""

import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.cdp import Browser, Page

# Installed in every page before its own scripts: CSP violations as the page itself sees them
# (the console reports them too; this names the directive and the blocked URL exactly).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} ` +
  `${e.sourceFile || ''}:${e.lineNumber}`
));
"""
# Swagger UI's block of one operation, by method and path.
FIND_OPERATION = """
window.__op = (method, path) => [...document.querySelectorAll('.opblock')].find(block =>
  block.querySelector('.opblock-summary-method')?.textContent.trim() === method &&
  block.querySelector('.opblock-summary-path')?.getAttribute('data-path') === path) || null;
true;
"""


@dataclass
class PageReport:
    name: str
    findings: list[str] = field(default_factory=list)  # what was seen to work
    problems: list[str] = field(default_factory=list)  # what failed
    # Said in the console without failing anything (ReDoc's remarks on the schema, say).
    warnings: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"== {self.name}: {'FAIL' if self.problems else 'ok'}"]
        out += [f"  ok    {line}" for line in self.findings]
        out += [f"  FAIL  {line}" for line in self.problems]
        out += [f"  note  {line}" for line in self.warnings]
        out.append(f"  {len(self.requests)} requests:")
        out += [f"        {line[:160]}" for line in self.requests]
        return out


def judge_traffic(page: Page, base: str, report: PageReport, violations: Sequence[str]) -> None:
    """Every request to the app and answered below 400; no console error; no CSP violation."""
    urls: dict[str, str] = {}
    for sent in page.seen("Network.requestWillBeSent"):
        url: str = sent["request"]["url"]
        urls[sent["requestId"]] = url
        report.requests.append(f"{sent['request']['method']} {url}")
        if not url.startswith((base + "/", "data:", "blob:")):
            report.problems.append(f"request outside the app: {url}")
    for received in page.seen("Network.responseReceived"):
        answer = received["response"]
        if answer["status"] >= 400:
            report.problems.append(f"{answer['status']} for {answer['url']}")
    for failed in page.seen("Network.loadingFailed"):
        reason = failed.get("blockedReason") or failed.get("errorText")
        report.problems.append(f"request failed: {urls.get(failed['requestId'], '?')} ({reason})")
    for added in page.seen("Log.entryAdded"):
        entry = added["entry"]
        line = f"console {entry['level']} ({entry['source']}): {entry['text']}"
        if entry["level"] == "error":
            report.problems.append(line)
        elif entry["level"] == "warning":
            report.warnings.append(line)
    for call in page.seen("Runtime.consoleAPICalled"):
        text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in call["args"])
        if call["type"] in {"error", "assert"}:
            report.problems.append(f"console.{call['type']}: {text[:300]}")
        elif call["type"] == "warning":
            report.warnings.append(f"console.warning: {text[:300]}")
    for thrown in page.seen("Runtime.exceptionThrown"):
        details = thrown["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text")
        report.problems.append(f"uncaught exception: {str(text)[:300]}")
    report.problems.extend(f"CSP violation: {violation}" for violation in violations)


async def try_it_out(
    page: Page, method: str, path: str, body: str | None = None
) -> tuple[str, str]:
    """Expand an operation, press "Try it out", type the body, press "Execute": the status and
    the body Swagger UI shows for the live answer."""
    op = f"window.__op({json.dumps(method)}, {json.dumps(path)})"
    await page.wait_for(f"!!{op}", f"{method} {path} in the list")
    await page.evaluate(f"{op}.querySelector('.opblock-summary-control').click()")
    await page.wait_for(f"!!{op}.querySelector('.try-out__btn')", f"{method} {path} to open")
    await page.evaluate(f"{op}.querySelector('.try-out__btn').click()")
    if body is not None:
        editor = f"{op}.querySelector('textarea.body-param__text')"
        await page.wait_for(f"!!{editor}", "the request body editor")
        await page.type_text(editor, body)
    await page.wait_for(f"!!{op}.querySelector('button.execute')", "the Execute button")
    await page.evaluate(f"{op}.querySelector('button.execute').click()")
    live = f"{op}.querySelector('.live-responses-table .response"
    status: str = await page.wait_for(
        f"{live} .response-col_status')?.textContent.trim()", f"the answer to {method} {path}"
    )
    shown: str = await page.evaluate(f"{live} .response-col_description pre')?.textContent ?? ''")
    return status, shown


async def check_swagger_ui(
    browser: Browser, base: str, shots: Path | None, report: PageReport
) -> None:
    page = await browser.new_page()
    await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER})
    try:
        await page.goto(f"{base}/docs")
        count = await page.wait_for(
            "document.querySelectorAll('#swagger-ui .opblock').length", "the operation list"
        )
        title = await page.evaluate(
            "document.querySelector('#swagger-ui .info .title')?.textContent"
        )
        report.findings.append(f"rendered: title {title!r}, {count} operations in the DOM")
        if shots:
            await page.screenshot(shots / "docs.png")
        await page.evaluate(FIND_OPERATION)

        email = f"docs-check-{secrets.token_hex(4)}@example.com"
        signup = json.dumps({"email": email, "password": f"offline-{secrets.token_hex(8)}"})
        status, shown = await try_it_out(page, "POST", "/v1/auth/signup", signup)
        if status != "201":
            report.problems.append(f"Try it out POST /v1/auth/signup: {status} {shown[:300]}")
            return
        token = json.loads(shown)["session_token"]
        report.findings.append("Try it out: POST /v1/auth/signup answered 201 with a session token")

        dialog = "document.querySelector('.modal-ux')"
        await page.evaluate("document.querySelector('.auth-wrapper .btn.authorize').click()")
        value = f"{dialog}?.querySelector('input[type=text], input:not([type])')"
        await page.wait_for(f"!!{value}", "the Authorize dialog")
        await page.type_text(value, token)
        await page.evaluate(f"{dialog}.querySelector('.auth-btn-wrapper .authorize').click()")
        await page.wait_for(
            f"{dialog}.querySelector('.auth-btn-wrapper')?.textContent.includes('Logout')",
            "Swagger UI to take the token",
        )
        await page.evaluate(f"{dialog}.querySelector('.btn-done, .close-modal').click()")
        report.findings.append("Authorize: the session token was taken (HTTPBearer)")

        status, shown = await try_it_out(page, "GET", "/v1/auth/me")
        if status != "200" or json.loads(shown or "{}").get("email") != email:
            report.problems.append(f"Try it out GET /v1/auth/me: {status} {shown[:300]}")
        else:
            report.findings.append(f"Try it out: GET /v1/auth/me answered 200 for {email}")
        if shots:
            await page.evaluate("window.__op('GET', '/v1/auth/me').scrollIntoView()")
            await page.screenshot(shots / "docs-try-it-out.png")
    finally:
        violations = await page.evaluate("window.__cspViolations ?? []")
        judge_traffic(page, base, report, violations)


async def check_redoc(browser: Browser, base: str, shots: Path | None, report: PageReport) -> None:
    page = await browser.new_page()
    await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER})
    try:
        await page.goto(f"{base}/redoc")
        count = await page.wait_for(
            "document.querySelectorAll('[data-section-id^=\"operation/\"]').length",
            "ReDoc's operations",
        )
        title = await page.evaluate("document.querySelector('.api-info h1')?.textContent")
        report.findings.append(f"rendered: title {title!r}, {count} operations in the DOM")
        search = "document.querySelector('input.search-input')"
        await page.wait_for(f"!!{search}", "the search box")
        await page.type_text(search, "signup")
        hits = await page.wait_for(
            "document.querySelectorAll('[data-role=\"search:results\"] li').length",
            "search results (ReDoc's blob: worker)",
        )
        report.findings.append(f"search for 'signup' (in ReDoc's worker): {hits} result(s)")
        if shots:
            await page.screenshot(shots / "redoc.png")
    finally:
        violations = await page.evaluate("window.__cspViolations ?? []")
        judge_traffic(page, base, report, violations)


Check = Callable[[Browser, str, Path | None, PageReport], Awaitable[None]]
CHECKS: tuple[tuple[str, Check], ...] = (
    ("/docs (Swagger UI)", check_swagger_ui),
    ("/redoc (ReDoc)", check_redoc),
)


async def check_pages(endpoint: str, base: str, shots: Path | None = None) -> list[PageReport]:
    """Both pages of the app at `base`, in the browser at `endpoint`: a report per page."""
    reports = []
    async with Browser.connect(endpoint) as browser:
        for name, check in CHECKS:
            report = PageReport(name)
            reports.append(report)
            try:
                await check(browser, base, shots, report)
            except Exception as exc:  # a wait that ran out: say so, and check the next page
                report.problems.insert(0, f"{type(exc).__name__}: {exc}")
    return reports
