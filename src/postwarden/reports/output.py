"""Tables as text for the terminal (rich), CSV for spreadsheets, JSON for scripts."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from postwarden.reports.builders import Table
from postwarden.visible import visible


def as_text(tables: list[Table], width: int = 100) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, highlight=False)
    for table in tables:
        shown = RichTable(title=table.title, title_justify="left")
        for number, column in enumerate(table.columns):
            shown.add_column(column, justify="left" if number == 0 else "right")
        for row in table.rows:
            # as Text: a sender such as "[red]x@example.com" is no markup to rich; and
            # visible: an escape sequence in one is not run by the reader's terminal
            shown.add_row(*(Text(visible(str(value))) for value in row))
        if not table.rows:
            shown.caption = "nothing in this period"
        console.print(shown)
    return buffer.getvalue()


def as_csv(tables: list[Table]) -> str:
    """One CSV block per table, headed by the table's title, blocks apart by a line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for number, table in enumerate(tables):
        if number:
            buffer.write("\n")
        writer.writerow([f"# {table.title}"])
        writer.writerow(table.columns)
        writer.writerows([[_cell(value) for value in row] for row in table.rows])
    return buffer.getvalue()


def _cell(value: str | int | float) -> str | int | float:
    """A spreadsheet runs a cell that starts like a formula (an address's local part
    may start with = or -): quoted, it is text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def as_json(tables: list[Table]) -> str:
    return json.dumps(
        [
            {"title": t.title, "rows": [dict(zip(t.columns, row, strict=True)) for row in t.rows]}
            for t in tables
        ],
        indent=2,
    )
