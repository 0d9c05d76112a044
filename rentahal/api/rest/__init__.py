"""REST under `/api/v1`, a module per resource, assembled into one router.

Routes match in the order they are included; the one pair that depends on it,
`/queries/running` before `/queries/{query_id}`, lives in `queries` alone.
"""

from __future__ import annotations

from fastapi import APIRouter

from rentahal.api.errors import REFUSED
from rentahal.api.rest import (
    federation,
    huggingface,
    keys,
    queries,
    routing,
    session,
    stats,
    sysop,
    workers,
)

router = APIRouter(prefix="/api/v1", responses=REFUSED)
router.include_router(session.router)  # who you are; a browser session for an API key
router.include_router(queries.router)
router.include_router(sysop.router)  # broadcast, the audit log
router.include_router(workers.router)
router.include_router(huggingface.router)  # Hugging Face models, each a cloud worker
router.include_router(routing.router)  # pools and realms
router.include_router(keys.router)
router.include_router(stats.router)
router.include_router(federation.router)  # peers, and what peer installations call
