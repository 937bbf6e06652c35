"""Request bodies that are not JSON: the urlencoded forms of the mail-link pages and of RFC 7662
introspection, parsed strictly (each field once, UTF-8), and the media type of a request."""

from urllib.parse import parse_qs

from starlette.requests import Request

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def media_type(request: Request) -> str:
    """The Content-Type without its parameters, lower-case; "" when there is none."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    """application/json, or a structured suffix of it (application/problem+json), as FastAPI."""
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def parse_form(body: bytes, max_fields: int) -> dict[str, str]:
    """The fields of an urlencoded body, each given once; ValueError for anything else (not
    ASCII, not UTF-8 once decoded, malformed, too many fields, a field twice)."""
    fields = parse_qs(
        body.decode("ascii"),
        keep_blank_values=True,
        strict_parsing=True,
        encoding="utf-8",
        errors="strict",
        max_num_fields=max_fields,
    )
    if any(len(values) != 1 for values in fields.values()):
        raise ValueError("a field given more than once")
    return {name: values[0] for name, values in fields.items()}
