"""The ASGI entry point for Gunicorn: `gunicorn -c gunicorn.conf.py api.main:app`.

The only place where the API's settings are read from the environment.
"""

from __future__ import annotations

from api.app import create_app
from api.settings import ApiSettings

app = create_app(ApiSettings())
