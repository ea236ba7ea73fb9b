"""Tables as one self-contained HTML page: bar charts (inline SVG) above the tables.

The page must work where it is opened: a browser with no network, a mail client that
blocks remote content, a phone, paper, a printer without colour. So it loads nothing
(no script, font, stylesheet or image from elsewhere), states every bar's value in
text, and only the template holds markup: every size and label is computed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import TypeGuard

import jinja2

from postwarden.reports.builders import Table
from postwarden.visible import visible

CHART_ROWS = 10
"""More bars than this are a wall; the table below the chart has every row."""

LABEL_LIMIT = 40
"""Characters of a label a bar shows: about what fits a phone's width. The full text
is in the bar's tooltip and in the table."""

LONGEST_BAR = 78.0
"""Percent of the chart's width the largest value gets: the rest keeps room for the
value printed after the bar on a narrow screen."""

SHORTEST_BAR = 0.5
"""Percent: a small value next to a large one still shows a visible bar, so that only
a zero has none."""

# px: the chart scales in width only, so that its text keeps the page's size
ROW_HEIGHT = 44
LABEL_BASELINE = 14
BAR_TOP = 20
BAR_HEIGHT = 16
VALUE_BASELINE = 33
CHART_PADDING = 4


@dataclass(frozen=True)
class Cell:
    text: str
    number: bool
    column: str
    """The column's name: a narrow screen shows it beside the value."""


@dataclass(frozen=True)
class Bar:
    label: str
    full_label: str
    value: str
    width: str
    """Percent of the chart's width, as the SVG attribute takes it."""
    label_y: int
    bar_y: int
    value_y: int


@dataclass(frozen=True)
class Chart:
    caption: str
    height: int
    bar_height: int
    bars: list[Bar]


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    columns: list[Cell]
    rows: list[list[Cell]]
    chart: Chart | None


def as_html(tables: list[Table], title: str, period: str, generated: str) -> str:
    """The page: a header (title, period, when it was made), then for each table its
    chart (when it has one and rows) and the table itself."""
    sections = [_section(number, table) for number, table in enumerate(tables, start=1)]
    return _template().render(
        title=shown(title), period=shown(period), generated=shown(generated), sections=sections
    )


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("postwarden.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")


def shown(value: str | int | float) -> str:
    """A value as a person reads it: numbers with grouped digits, text with its
    invisible characters made visible. Escaping for HTML is the template's job."""
    if isinstance(value, str):
        return visible(value)
    return f"{value:,}"


def _section(number: int, table: Table) -> Section:
    numeric = [
        index > 0 and bool(table.rows) and all(_is_number(row[index]) for row in table.rows)
        for index in range(len(table.columns))
    ]
    names = [shown(column) for column in table.columns]
    return Section(
        anchor=f"table-{number}",
        title=shown(table.title),
        columns=[Cell(name, numeric[i], name) for i, name in enumerate(names)],
        rows=[
            [Cell(shown(value), numeric[i], names[i]) for i, value in enumerate(row)]
            for row in table.rows
        ],
        chart=_chart(table, table.chart) if table.chart is not None and table.rows else None,
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _chart(table: Table, charted: str) -> Chart:
    if charted not in table.columns:
        raise ValueError(f"{table.title}: chart column {charted!r} is not a column")
    column = table.columns.index(charted)
    values: list[float] = []
    for row in table.rows:
        value = row[column]
        if not _is_number(value):
            raise ValueError(f"{table.title}: {charted} {value!r} is not a number")
        # a bar has no length below zero, nor for a value that is not one
        values.append(float(value) if math.isfinite(value) and value > 0 else 0.0)
    # sorted() is stable: rows with equal values keep the table's order
    top = sorted(range(len(table.rows)), key=lambda index: -values[index])[:CHART_ROWS]
    largest = max(values[index] for index in top)
    bars = []
    for place, index in enumerate(top):
        # an empty label (mail from no login) would leave a bar nobody can name
        label = shown(table.rows[index][0]) or "\u2014"
        top_y = CHART_PADDING + place * ROW_HEIGHT
        bars.append(
            Bar(
                label=_shortened(label),
                full_label=label,
                value=shown(table.rows[index][column]),
                width=f"{_width(values[index], largest):.2f}%",
                label_y=top_y + LABEL_BASELINE,
                bar_y=top_y + BAR_TOP,
                value_y=top_y + VALUE_BASELINE,
            )
        )
    if len(table.rows) > CHART_ROWS:
        caption = f"Top {CHART_ROWS} of {len(table.rows)} by {charted}"
    else:
        caption = f"By {charted}"
    return Chart(
        caption=shown(caption),
        height=2 * CHART_PADDING + len(bars) * ROW_HEIGHT,
        bar_height=BAR_HEIGHT,
        bars=bars,
    )


def _width(value: float, largest: float) -> float:
    if value <= 0 or largest <= 0:
        return 0.0
    return max(LONGEST_BAR * value / largest, SHORTEST_BAR)


def _shortened(label: str) -> str:
    if len(label) <= LABEL_LIMIT:
        return label
    return label[: LABEL_LIMIT - 1] + "\u2026"
