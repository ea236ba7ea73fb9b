"""Outside text shown to a person (postwarden/visible.py): the held-mail list that
prints senders and reasons a client chose, and the report's text tables."""

from __future__ import annotations

import pytest

from postwarden.moderation import Held, held_line
from postwarden.reports.builders import Table
from postwarden.reports.output import as_text
from postwarden.visible import visible, visible_in_markdown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("bob@example.org", "bob@example.org"),
        ("café ünïcode 名前", "café ünïcode 名前"),
        ("a\x1b[2Jb", "a\\u001b[2Jb"),  # clear the screen
        ("x\x1b]0;owned\x07y", "x\\u001b]0;owned\\u0007y"),  # set the window title
        ("line\rover", "line\\u000dover"),
        ("tab\there", "tab\\u0009here"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("one\u2028two", "one\\u2028two"),  # a line separator
        ("\x9b31m", "\\u009b31m"),  # the 8-bit CSI
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("tag\U000e0041", "tag\\U000e0041"),  # an invisible tag character
    ],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


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
    assert "from x\\u001b[1A\\u001b[2Kroot@example.com to" in line
    assert "(for x\\u001b[1A@example.com)" in line


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


def test_the_text_report_runs_no_escape_sequence() -> None:
    table = Table("T", ("login", "n"), [("a\x1b[2Jb\u202ec@example.com", 1)], chart="n")
    text = as_text([table])
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "a\\u001b[2Jb\\u202ec@example.com" in text


def test_markdown_reads_nothing_of_outside_text() -> None:
    shown = visible_in_markdown("a [x](https://e) ![](i) **b** `c` <b> | \x1b")
    assert shown == (
        "a \\[x\\]\\(https://e\\) \\!\\[\\]\\(i\\) \\*\\*b\\*\\* \\`c\\` \\<b\\> \\| \\\\u001b"
    )
