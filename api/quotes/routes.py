"""HTTP routes of api.quotes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
