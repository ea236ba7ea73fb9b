"""Text from the outside (an envelope sender, a subject, a reason holding either)
on an operator's terminal: control characters shown as escapes, so that a hostile
value cannot move the cursor, rewrite earlier lines or set the window title."""

from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """``text`` with every control, format or separator character but the space
    written as a \\x, \\u escape; anything else as it is."""
    return "".join(
        char
        if char == " " or unicodedata.category(char)[0] not in "CZ"
        else (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in text
    )
