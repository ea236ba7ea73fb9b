"""Outside text on an operator's terminal (postwarden/terminal.py), and the held-mail
list that prints senders and reasons a client chose."""

from __future__ import annotations

import pytest

from postwarden.moderation import Held, held_line
from postwarden.terminal import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("bob@example.org", "bob@example.org"),
        ("café ünïcode 名前", "café ünïcode 名前"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # clear the screen
        ("x\x1b]0;owned\x07y", "x\\x1b]0;owned\\x07y"),  # set the window title
        ("line\rover", "line\\x0dover"),
        ("tab\there", "tab\\x09here"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("one\u2028two", "one\\u2028two"),  # a line separator
        ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_a_hostile_sender_cannot_reach_the_terminal() -> None:
    message = Held(
        queue_id="4ABC123",
        arrival=0,
        sender="x\x1b[1A\x1b[2Kroot@example.com",
        recipients=("all-staff@example.com", "a\rb@example.com"),
        size=512,
        subject="hi\x1b[31m",
        header_from="",
        reason="post to all-staff@example.com awaits a moderator\x07",
        held_for="x\x1b[1A@example.com",
    )
    line = held_line(message)
    assert all(char == " " or char.isprintable() for char in line), repr(line)
    assert "from x\\x1b[1A\\x1b[2Kroot@example.com to" in line
    assert "(for x\\x1b[1A@example.com)" in line


def test_an_ordinary_entry_reads_as_before() -> None:
    message = Held(
        "4ABC123",
        0,
        "bob@example.org",
        ("all-staff@example.com",),
        512,
        "Lunch",
        "",
        "post to all-staff@example.com awaits a moderator",
        "bob@example.org",
    )
    assert held_line(message) == (
        "4ABC123  from bob@example.org to all-staff@example.com  512 bytes  'Lunch'"
        "  held: post to all-staff@example.com awaits a moderator (for bob@example.org)"
    )
