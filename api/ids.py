"""Row ids as the API accepts them: the range of the BIGINT (MariaDB) / INTEGER (SQLite) id
columns, 1 to 2**63 - 1. A path id outside it is `422 validation_error`, never handed to the
database: SQLite cannot even bind an integer beyond 64 bits (a 500 before this type existed).
Cursors decode to ids in the same range (api.pagination)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="an id, 1 to 2^63-1")]
