"""Liveness and readiness probes, and the Prometheus metrics."""

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.openapi import errors
from app.errors import ServiceUnavailable
from app.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get("/v1/health", summary="Check that the process is up")
async def health() -> dict[str, str]:
    """The process is up (no database call)."""
    return {"status": "ok"}


@router.get(
    "/v1/ready",
    summary="Check that the database is reachable and migrated",
    responses=errors(
        ServiceUnavailable("database unreachable"),
        ServiceUnavailable("database schema at 0005, expected 0006"),
    ),
)
async def ready(request: Request) -> dict[str, Any]:
    """The database answers and its schema is at the migrations' head; 503 otherwise."""
    expected: str = request.app.state.migration_head
    try:
        async with request.app.state.engine.connect() as conn:
            current = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except Exception as exc:
        raise ServiceUnavailable("database unreachable") from exc
    if current != expected:
        raise ServiceUnavailable(f"database schema at {current}, expected {expected}")
    return {"status": "ready", "migration": current}


# Scraped by Prometheus, not called by API clients: kept out of the OpenAPI schema.
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Request counts and latencies by route, the hashing queue and the database pool."""
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
