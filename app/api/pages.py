"""The pages the links in the mails open when the app set no link_base_url: the links then
point at this service (PUBLIC_URL), and these pages finish the flow in a plain browser.

    GET  /verify-email?token=…          one button, which POSTs the token
    POST /verify-email                  -> "your address is verified"
    GET  /reset-password?token=…        the new password, twice
    POST /reset-password                -> "your password is reset"
    GET  /confirm-email-change?token=…  one button
    POST /confirm-email-change          -> "your address is now …"

A GET never uses the token: mail scanners and link previewers fetch the links in a mail, and a
single-use token must survive them; only the person's button press (a POST) spends it.

Thin, like the API routers: the rules are services/email_flows'. The pages run no script and
load nothing: the CSS is inline, allowed by its hash in each page's own Content-Security-Policy
(app/middleware.py keeps it, see PAGES). Every answer is `no-store` (the token is in the URL
and the form) and `no-referrer`. The forms are parsed here, from the urlencoded body, rather
than with python-multipart, which the service does not otherwise need.

None of this is in the OpenAPI document: an app with a front end of its own sets link_base_url
and calls the JSON routes (/v1/auth/verify-email, /reset-password, /change-email/confirm).
"""

import base64
import hashlib
import re
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from app import db as database
from app.api import forms
from app.api.deps import Config, Db, From, HashAdmission, Hasher, rate_limit
from app.errors import (
    ApiError,
    EmailTaken,
    InvalidCode,
    RateLimited,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.services import email_flows
from app.services.email_flows import LINK_PATH, Mail, Presented
from app.settings import Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "pages"

VERIFY_URL = "/" + LINK_PATH[Mail.VERIFY]
RESET_URL = "/" + LINK_PATH[Mail.RESET]
CHANGE_URL = "/" + LINK_PATH[Mail.CHANGE]
# The pages that set their own Content-Security-Policy (app/middleware.py keeps it).
PAGES = frozenset({VERIFY_URL, RESET_URL, CHANGE_URL})

# A link token is a prefix and 256 random bits in base64url (app/security/tokens.py); the JSON
# routes take at most 256 characters, and so do these. Anything else cannot be a live token.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
FORM = forms.FORM
# A form here has at most three fields; more is not a browser submitting one of these pages.
MAX_FIELDS = 8

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    # Everything put into a page is escaped, the token of the URL included.
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# Read once: the page's policy allows exactly this text as a <style> element, by its hash
# (layout.html writes it unescaped: it is our own file, and `>` must stay `>` in CSS).
STYLE = (TEMPLATES / "pages.css").read_text("utf-8")
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": POLICY,
    "cache-control": "no-store",
    "pragma": "no-cache",
    "referrer-policy": "no-referrer",
}

INVALID = (
    "This link is invalid or has expired",
    "The link may have been used already, or a newer one sent since. Ask for a new one.",
)
BUSY = ("The service is busy", "Please try again in a moment.")


def render(template: str, **context: Any) -> str:
    """The page `template` of app/pages/, every value escaped."""
    return _environment.get_template(template).render(style=STYLE, **context)


def page(
    template: str,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    return HTMLResponse(
        render(template, **context), status_code=status, headers={**HEADERS, **(headers or {})}
    )


def message(
    title: str, text: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    return page("message.html", status, headers, title=title, text=text, problem=status >= 400)


def error_page(exc: ApiError) -> HTMLResponse:
    """The page of an error a flow or a dependency raised (the API answers these as JSON)."""
    if isinstance(exc, InvalidCode):
        return message(*INVALID, status=400)
    if isinstance(exc, EmailTaken):
        return message(
            "That address is already in use",
            "Another account has this e-mail address now, so yours was not changed.",
            status=409,
        )
    if isinstance(exc, RateLimited):
        return message(
            "Too many attempts",
            "Too many links were tried from your network. Please wait a little and try again.",
            status=429,
            headers=exc.headers,
        )
    if isinstance(exc, ServiceUnavailable):
        return message(*BUSY, status=503, headers=exc.headers)
    if isinstance(exc, UnsupportedMediaType):
        return message(
            "Unsupported request", "This page takes the form it shows, and nothing else.", 415
        )
    return message("Something went wrong", f"The request was refused: {exc.message}.", exc.status)


class PageRoute(APIRoute):
    """A route answering its errors as pages: those of the flows, and those of its
    dependencies (the rate limit's 429, the hashing queue's 503), which app/main.py's handlers
    would answer as JSON. A database outage becomes the "busy" page too; anything else is a
    bug, and goes on to the 500 handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_as_page(request: Request) -> Response:
            try:
                return await handle(request)
            except ApiError as exc:
                return error_page(exc)
            except Exception as exc:
                if database.is_unavailable(exc) or database.is_retryable(exc):
                    return message(*BUSY, status=503, headers={"Retry-After": "1"})
                raise

        return handle_as_page


router = APIRouter(include_in_schema=False, route_class=PageRoute)
# HEAD too: link checkers and previewers ask with it.
READ = ["GET", "HEAD"]
# Each POST presents a token: counted like the JSON routes that do.
PRESENTS = [Depends(rate_limit("code"))]


class BadForm(Exception):
    """A body no page of ours sends: answered as the invalid-link page."""


def _token(values: list[str]) -> str:
    """The one well-formed token given, or BadForm (none, several, or not a token's shape)."""
    if len(values) != 1 or not TOKEN.fullmatch(values[0]):
        raise BadForm()
    return values[0]


def _query_token(request: Request) -> str:
    return _token(request.query_params.getlist("token"))


def _form_token(form: Mapping[str, str]) -> str:
    return _token([form["token"]] if "token" in form else [])


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded fields of the body, each given once; 415 for another media type. The
    size is already bounded by MAX_BODY_BYTES (app/middleware.py)."""
    if forms.media_type(request) != FORM:
        raise UnsupportedMediaType()
    try:
        return forms.parse_form(await request.body(), MAX_FIELDS)
    except ValueError as exc:  # not ASCII, not UTF-8 once decoded, malformed, too many fields
        raise BadForm() from exc


def _action(request: Request, path: str) -> str:
    """`path` under the prefix a proxy serves the app at (root_path), for a form's action."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/") + path


def _button_page(request: Request, url: str, *, title: str, text: str, button: str) -> HTMLResponse:
    """The page a link opens: one button that POSTs the link's token back to `url` (a GET
    spends nothing, so mail scanners that open links cannot use a token up)."""
    try:
        token = _query_token(request)
    except BadForm:
        return message(*INVALID, status=400)
    return page(
        "button.html",
        title=title,
        text=text,
        action=_action(request, url),
        token=token,
        button=button,
    )


# ---- verify the address ----------------------------------------------------------------------


@router.api_route(VERIFY_URL, methods=READ)
async def verify_email_page(request: Request) -> HTMLResponse:
    return _button_page(
        request,
        VERIFY_URL,
        title="Verify your e-mail address",
        text="Press the button to confirm that this e-mail address is yours.",
        button="Verify my address",
    )


@router.post(VERIFY_URL, dependencies=PRESENTS)
async def verify_email(request: Request, db: Db, settings: Config, origin: From) -> HTMLResponse:
    try:
        token = _form_token(await _form(request))
    except BadForm:
        return message(*INVALID, status=400)
    # Where the app requires a verified address the JSON route would also sign in; a page has
    # nowhere to put the tokens, so it asks for none.
    await email_flows.verify_email(db, settings, origin, Presented(token=token), sign_in=False)
    return message("Your address is verified", "Thank you. You can now sign in.")


# ---- reset a forgotten password -------------------------------------------------------------


def _reset_form(
    request: Request, settings: Settings, token: str, problem: str | None = None
) -> HTMLResponse:
    return page(
        "reset_password.html",
        status=200 if problem is None else 400,
        title="Choose a new password",
        action=_action(request, RESET_URL),
        token=token,
        problem=problem,
        min_length=settings.password_min_length,
        max_length=settings.password_max_length,
    )


@router.api_route(RESET_URL, methods=READ)
async def reset_password_page(request: Request, settings: Config) -> HTMLResponse:
    try:
        token = _query_token(request)
    except BadForm:
        return message(*INVALID, status=400)
    return _reset_form(request, settings, token)


@router.post(RESET_URL, dependencies=[HashAdmission, *PRESENTS])
async def reset_password(
    request: Request, db: Db, hasher: Hasher, settings: Config, origin: From
) -> HTMLResponse:
    try:
        form = await _form(request)
        token = _form_token(form)
    except BadForm:
        return message(*INVALID, status=400)
    password = form.get("new_password", "")
    if password != form.get("repeat_password"):
        return _reset_form(request, settings, token, "The two passwords are not the same.")
    try:
        await email_flows.reset_password(
            db, hasher, settings, origin, Presented(token=token), password
        )
    except ValidationFailed as exc:
        # "must be at least 8 characters", "is too common; …": the policy's own words.
        reason = exc.extra["details"][0]["message"]
        return _reset_form(request, settings, token, f"The password {reason}.")
    return message(
        "Your password is reset",
        "Every session of your account was signed out. Sign in again with the new password.",
    )


# ---- confirm a new address ------------------------------------------------------------------


@router.api_route(CHANGE_URL, methods=READ)
async def confirm_email_change_page(request: Request) -> HTMLResponse:
    return _button_page(
        request,
        CHANGE_URL,
        title="Confirm your new e-mail address",
        text="Press the button to make this address the one of your account.",
        button="Confirm my new address",
    )


@router.post(CHANGE_URL, dependencies=PRESENTS)
async def confirm_email_change(request: Request, db: Db, origin: From) -> HTMLResponse:
    try:
        token = _form_token(await _form(request))
    except BadForm:
        return message(*INVALID, status=400)
    user = await email_flows.confirm_email_change(db, origin, Presented(token=token))
    return message(
        "Your address is changed", f"The address of your account is now {user['email']}."
    )
