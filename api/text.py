"""Free text that clients choose (names, labels, their own ids): one constrained string type.

Such text is stored, shown back in answers and lists, written to logs and compared in SQL.
Control characters have no place in it: NUL truncates the value in C-based tools and some
drivers, newlines forge log lines, ESC sequences repaint a terminal, and none of them can be
seen in a list. So every schema field that takes free text is one of the types below, and a value
with a character of Unicode category Cc (U+0000-U+001F, U+007F-U+009F: tab and newline
included) is refused with 422 `validation_error` before anything is done. Lone surrogates never
get this far: the JSON parser refuses them. Passwords are not free text: any character may be
in one, and it is only hashed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

# The same rule as an ECMA-262 pattern, so that the OpenAPI document says it too (and schema
# based test generators produce values we accept).
NO_CONTROL_CHARACTERS_PATTERN = r"^[^\u0000-\u001F\u007F-\u009F]*$"
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def refuse_control_characters(value: str) -> str:
    """`value` itself, or ValueError naming the first control character and where it is."""
    found = _CONTROL_CHARACTER.search(value)
    if found is not None:
        raise ValueError(f"must not contain control characters (U+{ord(found.group()):04X} at "
                         f"position {found.start()})")
    return value


class _NoControlCharacters:
    """Annotation metadata: refuse control characters, and say so in the JSON schema."""

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(refuse_control_characters,
                                                            handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = NO_CONTROL_CHARACTERS_PATTERN
        return json_schema


NO_CONTROL_CHARACTERS = _NoControlCharacters()


# Each free-text type below declares its length rules FIRST and NO_CONTROL_CHARACTERS LAST:
# Pydantic applies annotations in order, and length rules placed after a validator lose their
# native check (and its message), while stripping after it would check untrimmed text. So give
# a field one of these types rather than `str` plus `Field(max_length=...)`.

# A client's own label for something, up to 64 characters (trimmed): watchlist names.
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
                  NO_CONTROL_CHARACTERS]
# A client's own id for something, up to 64 characters, taken as sent: order client ids.
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=64), NO_CONTROL_CHARACTERS]
# A display name up to 128 characters, taken as sent: payment order names.
DisplayName = Annotated[str, StringConstraints(max_length=128), NO_CONTROL_CHARACTERS]
