"""Instrument codes as clients type them, turned into the one form the bus uses (`A005930`).

Accepted: the bus form (`A` + 6 characters: `A005930`, `A0080G0`), in any letter case, and a bare
six-digit code (`005930`), which is what KRX itself prints and many clients send. A bare code with
letters is refused rather than guessed at: `A00066` (a typo of `A000660`) must not silently
become `AA00066`.

`parse_code` raises ValueError for callers that try another reading next (a topic); the routes'
code parameters go through `checked_code` / `unique_codes`, which refuse with 422 `invalid_code`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from api.errors import Unprocessable
from relayer.bus import INSTRUMENT_CODE

_BARE_DIGITS = re.compile(r"[0-9]{6}")


def parse_code(text: str) -> str:
    """The bus form of an instrument code; ValueError if `text` is not one."""
    candidate = text.strip().upper()
    if _BARE_DIGITS.fullmatch(candidate):
        return "A" + candidate
    if INSTRUMENT_CODE.fullmatch(candidate):
        return candidate
    raise ValueError(
        f"{text!r} is not an instrument code: expected A + 6 characters (A005930) "
        "or 6 digits (005930)"
    )


def checked_code(text: str) -> str:
    """The bus form of an instrument code (`parse_code`); 422 `invalid_code`."""
    try:
        return parse_code(text)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_code") from exc


def unique_codes(texts: Iterable[str]) -> list[str]:
    """Instrument codes in bus form, in the given order, without repeats; 422 `invalid_code`."""
    return list(dict.fromkeys(checked_code(text) for text in texts))
