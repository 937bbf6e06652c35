"""The API's docs: Swagger UI at /docs, ReDoc at /redoc, the OpenAPI document they read, and
their JS, CSS and icon under /docs-assets/, all answered by this process. GET / leads to /docs.

A self-hosted service may have no internet access, so the pages load nothing from elsewhere:
the assets are the files the fastapi-offline package ships (Swagger UI 5 and ReDoc 2, the majors
FastAPI's own helpers point at), and ReDoc is told not to ask for Google Fonts. FastAPI's own
docs routes are switched off (create_app) because they point at a CDN, and because they are
plain Starlette routes, which leave no route in the scope for the access log and the metrics:
these are FastAPI routes, which do.

Each page carries a Content-Security-Policy of its own (app/middleware.py keeps it), listing what
the page was seen to use in Chromium (tools/check_docs_offline.py) and no more.
"""

import asyncio
import base64
import hashlib
import re
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

OPENAPI_URL = "/openapi.json"
SWAGGER_UI_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"

# The package's static/ directory, which holds swagger-ui-bundle.js, swagger-ui.css,
# redoc.standalone.js and favicon.png. Resolved at import, so a missing package stops the
# start-up instead of turning the docs into 404s.
ASSETS_PACKAGE = ("fastapi_offline", "static")
_assets = StaticFiles(packages=[ASSETS_PACKAGE])

# ReDoc 2 draws Redocly's logo at the foot of its menu from Redocly's CDN, and has no option to
# leave it out: offline that is a failed request and a CSP violation, online a request to a
# third party from every reader's browser. The copy served here has the address blanked, and
# ReDoc then leaves the logo out, as it does whenever the image fails to load.
REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'

router = APIRouter(include_in_schema=False)
# HEAD as well, as FastAPI's own docs routes answered it (a link checker's or a probe's request).
READ = ["GET", "HEAD"]

# What each page may do; the sha256 of its inline scripts is added to script-src per answer.
# Each allowance below was taken away once, and tools/check_docs_offline.py then failed: the
# page broke, or the console showed a violation. default-src 'none' covers the rest: neither
# page loads a font (ReDoc without Google Fonts uses the system's), a frame or an object.
SWAGGER_UI_POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'none'",),
    # swagger-ui-bundle.js; FastAPI's inline SwaggerUIBundle({...}) call runs by its hash, so a
    # script injected into the page (by a crafted spec, say) still cannot.
    "script-src": ("'self'",),
    # swagger-ui.css. Swagger UI sets its inline styles through the DOM (element.style), which
    # CSP does not govern, so no 'unsafe-inline'.
    "style-src": ("'self'",),
    # The favicon, and the icons swagger-ui.css draws as data: SVG (the expand arrow, the
    # copy-to-clipboard button).
    "img-src": ("'self'", "data:"),
    # The OpenAPI document, and the calls "Try it out" makes.
    "connect-src": ("'self'",),
    "frame-ancestors": ("'none'",),
    "base-uri": ("'none'",),
    "form-action": ("'none'",),
}
REDOC_POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'none'",),
    # redoc.standalone.js; FastAPI's ReDoc page has no inline script.
    "script-src": ("'self'",),
    # ReDoc styles itself with styled-components, which writes <style> elements at run time,
    # with no way for the page to hand it a nonce, and their text is not known in advance for
    # hashes; FastAPI's page has an inline <style> block too. Scripts stay locked down.
    "style-src": ("'self'", "'unsafe-inline'"),
    # The favicon, and the section-link icon ReDoc's styles draw as a data: SVG.
    "img-src": ("'self'", "data:"),
    # The OpenAPI document.
    "connect-src": ("'self'",),
    # ReDoc builds its search index in a worker it starts from a blob: URL.
    "worker-src": ("blob:",),
    "frame-ancestors": ("'none'",),
    "base-uri": ("'none'",),
    "form-action": ("'none'",),
}

# FastAPI writes its inline scripts as bare <script>; the asset ones are <script src=...>.
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(page: bytes, policy: dict[str, tuple[str, ...]]) -> str:
    """`policy` as a header value, with the hashes of `page`'s inline scripts in script-src."""
    hashes = tuple(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    directives = {**policy, "script-src": policy["script-src"] + hashes}
    return "; ".join(" ".join((name, *sources)) for name, sources in directives.items())


def _root(request: Request) -> str:
    """The prefix a proxy serves the app under (root_path), for the URLs the pages load."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _with_policy(page: HTMLResponse, policy: dict[str, tuple[str, ...]]) -> HTMLResponse:
    page.headers["content-security-policy"] = content_security_policy(bytes(page.body), policy)
    return page


@router.api_route("/", methods=READ)
async def home(request: Request) -> RedirectResponse:
    """A browser pointed at the service lands on the docs."""
    return RedirectResponse(_root(request) + SWAGGER_UI_URL, status_code=307)


@router.api_route(OPENAPI_URL, methods=READ)
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document, as FastAPI's own route answers it: behind a proxy's root_path the
    schema names that prefix as its server, so "Try it out" calls the right URLs."""
    schema: dict[str, Any] = request.app.openapi()
    root = _root(request)
    if root and request.app.root_path_in_servers:
        servers: list[dict[str, Any]] = schema.get("servers", [])
        if root not in {server.get("url") for server in servers}:
            schema = {**schema, "servers": [{"url": root}, *servers]}
    return JSONResponse(schema)


@router.api_route(SWAGGER_UI_URL, methods=READ)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # The API's only scheme is a bearer token pasted into Authorize: no OAuth2 flow, so
        # no redirect page.
        oauth2_redirect_url=None,
        # Swagger UI's default would link an online validator run by swagger.io with the
        # spec's URL; it shows no badge once the spec has loaded, and null makes sure of it.
        swagger_ui_parameters={**(request.app.swagger_ui_parameters or {}), "validatorUrl": None},
    )
    return _with_policy(page, SWAGGER_UI_POLICY)


@router.api_route(REDOC_URL, methods=READ)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_redoc_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # ReDoc falls back to its system font stack.
        with_google_fonts=False,
    )
    return _with_policy(page, REDOC_POLICY)


@cache
def _redoc_js() -> tuple[bytes, str]:
    """ReDoc's bundle without the logo's address, and its ETag: read once, 1 MB in memory."""
    package, folder = ASSETS_PACKAGE
    script = files(package).joinpath(folder, "redoc.standalone.js").read_bytes()
    script = script.replace(REDOC_LOGO, b'""')
    return script, f'"{hashlib.sha256(script).hexdigest()[:32]}"'


# Declared before the route of the other files, so it answers for this one.
@router.api_route(ASSETS_URL + "/redoc.standalone.js", methods=READ)
async def redoc_js(request: Request) -> Response:
    script, etag = await asyncio.to_thread(_redoc_js)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    return Response(script, media_type="text/javascript", headers={"etag": etag})


@router.api_route(ASSETS_URL + "/{name}", methods=READ)
async def asset(name: str, request: Request) -> Response:
    """One of the package's files, with ETag and Last-Modified (a 304 when unchanged)."""
    return await _assets.get_response(name, request.scope)


# The pages that set their own Content-Security-Policy (app/middleware.py keeps it).
PAGES = frozenset({SWAGGER_UI_URL, REDOC_URL})
