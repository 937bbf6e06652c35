"""/v1/admin/stats: user totals, sign-ups per day and active users (services/stats).

Thin: parse, call the service, shape. The callers are those of every admin route
(admin.get_admin); an API key sees its own app, like every admin route.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from app.api.admin import CALLER, Admin
from app.api.admin_tools_schemas import StatsOut, StatsQuery
from app.api.deps import Db, rate_limit
from app.api.openapi import TENANT, errors
from app.errors import ValidationFailed
from app.services import stats

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(rate_limit("admin"))])


@router.get(
    "/stats",
    name="stats.get",
    summary="User statistics of an app environment",
    response_model=StatsOut,
    responses=errors(
        CALLER,
        ValidationFailed("app_id", "must be a TypeID with prefix aapp_"),
        TENANT,
    ),
)
async def get_stats(query: Annotated[StatsQuery, Query()], caller: Admin, db: Db) -> dict[str, Any]:
    """Users (total, verified, banned, deleted), sign-ups per UTC day over the last 30 days,
    and active users — distinct users whose sessions were used today, in the last 7 and the
    last 30 UTC days. Each figure is read from counters or a short index range: fast at
    millions of users."""
    return await stats.for_env(db, caller, query.app_id, query.env_id)
