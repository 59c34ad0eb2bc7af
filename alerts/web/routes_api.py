"""The JSON API (`/api/v1/...`): bearer tokens only, roles from the users file.

Every write goes through the case store's functions (alerts/cases/store.py), in one
transaction per request; this module holds no case logic of its own.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from alerts.web.security import api_principal
from alerts.web.users import PERMISSIONS

router = APIRouter(prefix="/api/v1", tags=["api"])


@router.get("/me", summary="Who the bearer token belongs to, and what it may do")
def me(request: Request) -> dict:
    p = api_principal(request)
    return {"name": p.name, "role": p.role, "may": [a for a, roles in PERMISSIONS.items() if p.role in roles]}
