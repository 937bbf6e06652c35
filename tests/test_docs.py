"""The docs pages load only what the app itself serves (app/api/docs.py): no CDN, no font host,
a policy that names no other host, and every asset answering with its type. No browser here;
tools/check_docs_offline.py and tests/test_docs_browser.py drive a real one."""

import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI

from app.api import docs

PAGES = ["/docs", "/redoc"]
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Page(HTMLParser):
    """Every URL a docs page makes the browser load, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href", "spec-url"):
            if attributes.get(name):
                self.urls.append(attributes[name] or "")
        if tag == "script" and not attributes.get("src"):
            self._in_inline = True
            self.inline.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline = False

    def handle_data(self, data: str) -> None:
        if self._in_inline:
            self.inline[-1] += data
            # Swagger UI's bootstrap names the OpenAPI document it fetches.
            self.urls += re.findall(r"url: '([^']*)'", data)


async def _page(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, _Page]:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)
    return response, page


def _policy(header: str) -> dict[str, list[str]]:
    directives = [d.split() for d in header.split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


@pytest.mark.parametrize("path", PAGES)
async def test_pages_load_only_the_apps_own_files(client: httpx.AsyncClient, path: str) -> None:
    response, page = await _page(client, path)
    assert "fonts.googleapis" not in response.text  # ReDoc's helper adds it unless told not to
    assert page.urls  # the page is what we think it is
    for url in page.urls:
        # Root-relative: same origin, whatever host or scheme the reader used.
        assert url.startswith("/") and not url.startswith("//"), url
        answer = await client.get(url)
        assert answer.status_code == 200, url
        if url == "/openapi.json":
            assert answer.headers["content-type"] == "application/json"
        else:
            suffix = url[url.rindex(".") :]
            assert answer.headers["content-type"].split(";")[0] == TYPES[suffix], url
            assert url.startswith(f"{docs.ASSETS_URL}/"), url


@pytest.mark.parametrize("path", PAGES)
async def test_page_policy_names_no_other_host(client: httpx.AsyncClient, path: str) -> None:
    response, page = await _page(client, path)
    policy = _policy(response.headers["content-security-policy"])
    keywords = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}
    for directive, sources in policy.items():
        for source in sources:
            assert source in keywords or source.startswith("'sha256-"), (directive, source)
    assert policy["default-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"][0] == "'self'" and policy["connect-src"] == ["'self'"]
    # Inline scripts run by their hash only: one injected into the page would not run.
    assert "'unsafe-inline'" not in policy["script-src"]
    hashes = [
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in page.inline
    ]
    assert policy["script-src"][1:] == hashes
    # The rest of the security headers, once each.
    assert response.headers.get_list("x-frame-options") == ["DENY"]
    assert response.headers.get_list("content-security-policy") == [
        response.headers["content-security-policy"]
    ]


async def test_each_page_allows_only_what_it_uses(client: httpx.AsyncClient) -> None:
    """What the browser check (tools/check_docs_offline.py) found each page to need."""
    swagger, swagger_page = await _page(client, "/docs")
    redoc, redoc_page = await _page(client, "/redoc")
    swagger_policy = _policy(swagger.headers["content-security-policy"])
    redoc_policy = _policy(redoc.headers["content-security-policy"])
    assert len(swagger_page.inline) == 1 and not redoc_page.inline
    assert swagger_policy["style-src"] == ["'self'"]  # Swagger UI styles through the DOM
    assert redoc_policy["style-src"] == ["'self'", "'unsafe-inline'"]  # styled-components
    assert "worker-src" not in swagger_policy and redoc_policy["worker-src"] == ["blob:"]
    assert "font-src" not in swagger_policy and "font-src" not in redoc_policy
    assert "validatorUrl: null" in swagger.text.replace('"', "")


@pytest.mark.parametrize(
    "path", ["/openapi.json", "/docs-assets/swagger-ui.css", "/docs-assets/redoc.standalone.js"]
)
async def test_documents_and_assets_keep_the_deny_all_policy(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == API_CSP


API_CSP = "default-src 'none'; frame-ancestors 'none'"


async def test_redoc_bundle_is_served_without_its_logo_from_a_cdn(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs-assets/redoc.standalone.js")
    assert response.status_code == 200
    assert b"cdn.redoc.ly" not in response.content
    assert b"Redoc" in response.content[:2000] and len(response.content) > 500_000
    again = await client.get(
        "/docs-assets/redoc.standalone.js", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304 and not again.content


async def test_other_assets_revalidate(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs-assets/swagger-ui-bundle.js")
    assert response.status_code == 200 and "etag" in response.headers
    again = await client.get(
        "/docs-assets/swagger-ui-bundle.js", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path", ["/docs-assets/nothing.js", "/docs-assets/..%2F__init__.py", "/docs/oauth2-redirect"]
)
async def test_no_other_file_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


async def test_root_leads_to_the_docs(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/docs"
    spec = (await client.get("/openapi.json")).json()
    docs_paths = {"/", "/docs", "/redoc", "/openapi.json"}
    assert not docs_paths & set(spec["paths"])
    assert not [path for path in spec["paths"] if path.startswith(docs.ASSETS_URL)]


@pytest.fixture
async def proxied(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a proxy that serves it under /userkeep (root_path)."""
    transport = httpx.ASGITransport(app=app, root_path="/userkeep")
    async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
        yield c


async def test_pages_behind_a_proxy_prefix_load_from_under_it(
    proxied: httpx.AsyncClient,
) -> None:
    for path in PAGES:
        response, page = await _page(proxied, f"/userkeep{path}")
        assert page.urls and all(url.startswith("/userkeep/") for url in page.urls), page.urls
        assert "content-security-policy" in response.headers
    assert (await proxied.get("/userkeep/")).headers["location"] == "/userkeep/docs"
    spec = (await proxied.get("/userkeep/openapi.json")).json()
    assert spec["servers"][0] == {"url": "/userkeep"}  # "Try it out" calls under the prefix


async def test_docs_requests_carry_a_route_in_the_access_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    paths = [
        "/",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs-assets/swagger-ui.css",
        "/docs-assets/redoc.standalone.js",
    ]
    with caplog.at_level(logging.INFO, logger="userkeep.access"):
        for path in paths:
            assert (await client.get(path)).status_code in {200, 307}
    routes = [getattr(r, "route", "?") for r in caplog.records if r.name == "userkeep.access"]
    assert routes == [
        "/",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs-assets/{name}",  # the template: one route, not one per file
        "/docs-assets/redoc.standalone.js",
    ]


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs-assets/redoc.standalone.js"]
)
async def test_pages_answer_head(client: httpx.AsyncClient, path: str) -> None:
    get, head = await client.get(path), await client.head(path)
    assert head.status_code == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]
