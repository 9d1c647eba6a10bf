"""Hangul initial consonants (초성), as Korean trading apps search by them: `ㅅㅅㅈㅈ` finds
삼성전자, and `삼ㅅ` (a syllable, then an initial) does too.

A precomposed syllable (U+AC00..U+D7A3) is 19 x 21 x 28 combinations of initial, medial and
final; its initial is `(code - 0xAC00) // (21 * 28)`. Pure functions, no tables but the 19
initials.
"""

from __future__ import annotations

_FIRST_SYLLABLE = 0xAC00
_LAST_SYLLABLE = 0xD7A3
_PER_INITIAL = 21 * 28
# The 19 initials in Unicode order, as the compatibility jamo a keyboard types.
INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_INITIAL_SET = frozenset(INITIALS)


def initial_of(char: str) -> str:
    """The initial consonant of a syllable; any other character as it is."""
    code = ord(char)
    if _FIRST_SYLLABLE <= code <= _LAST_SYLLABLE:
        return INITIALS[(code - _FIRST_SYLLABLE) // _PER_INITIAL]
    return char


def initials(text: str) -> str:
    """`text` with every syllable replaced by its initial: 삼성전자 -> ㅅㅅㅈㅈ, KODEX 200 stays.
    One character per character, so a position in one is the same position in the other."""
    return "".join(initial_of(char) for char in text)


def has_initial(text: str) -> bool:
    """Whether `text` holds a bare initial consonant (then it is searched by initials)."""
    return any(char in _INITIAL_SET for char in text)


def matches_at(query: str, text: str, position: int) -> bool:
    """Whether `query` matches `text` at `position`, a bare initial matching any syllable that
    starts with it (and itself): the caller found `initials(query)` there in `initials(text)`,
    so only the query's other characters remain to compare."""
    for offset, char in enumerate(query):
        if char not in _INITIAL_SET and text[position + offset] != char:
            return False
    return True
