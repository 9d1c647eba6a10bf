"""HTTP routes of api.auth."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
