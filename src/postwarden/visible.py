"""Text from the outside (an envelope sender, a login, a subject, a reason or a
server's reply holding either) shown to a person: every character that does not
show itself written as an escape.

On a terminal a control character could move the cursor, rewrite the lines above
or set the window title; on a page or in a table a line break could forge a row,
and a bidirectional override could show one login as another (an address written
backwards). Escaped, a person sees that something was there. The text report, the
HTML report and the held-mail list all show values through this one function."""

from __future__ import annotations

import re
import unicodedata


def visible(text: str) -> str:
    """``text`` with every control, format, separator or unassigned character but the
    space written as a \\u (or \\U) escape; anything else as it is."""
    return "".join(
        char
        if char == " " or unicodedata.category(char)[0] not in "CZ"
        else (f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
        for char in text
    )


MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def visible_in_markdown(text: str) -> str:
    """``text`` made visible, with every character markdown reads (links, images,
    emphasis, HTML, a table's bar) escaped: shown as it is, in a pull-request comment."""
    return MARKDOWN.sub(r"\\\1", visible(text))
