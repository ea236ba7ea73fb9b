"""The HTML report: one well-formed page that loads and runs nothing, a bar chart for
each table that asks for one, every value from the data as text, never as markup."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath

import pytest

from postwarden.reports.builders import Table
from postwarden.reports.html import CHART_ROWS, LABEL_LIMIT, as_html
from tests.conftest import ROOT

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
HOSTILE = [
    "<script>alert(1)</script>@x",
    '"><img src=x onerror=alert(1)>',
    "a&amp;b & c 'single' \"double\"",
    "</title></style></svg><!--",
    "<![CDATA[ ]]>",
]


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def all(self, tag: str | None = None) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                if tag is None or child.tag == tag:
                    yield child
                yield from child.all(tag)

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)


class Page(HTMLParser):
    """A page as a tree of elements, and what is wrong with its nesting."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]
        self.doctype = ""
        self.problems: list[str] = []
        self.feed(source)
        self.close()
        if len(self.open) > 1:
            self.problems.append(f"never closed: {[e.tag for e in self.open[1:]]}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if self.open[-1].tag != tag:
            self.problems.append(f"</{tag}> closes <{self.open[-1].tag}>")
            return
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)

    def handle_comment(self, data: str) -> None:
        self.problems.append(f"a comment: {data!r}")

    def sections(self) -> list[Element]:
        return list(self.root.all("section"))


def page_of(tables: list[Table], **header: str) -> Page:
    values = {"title": "Mail report", "period": "the last 7 days", "generated": "today"}
    page = Page(as_html(tables, **{**values, **header}))
    assert page.problems == []
    return page


def logins(count: int) -> Table:
    return Table(
        "Outbound mail by login",
        ("login", "messages", "bytes"),
        [(f"user{n}@example.com", count - n, 1000 * n) for n in range(count)],
        chart="messages",
    )


def bars(section: Element) -> list[tuple[str, str, str]]:
    """(label, width, value) of each bar of the section's chart, top down."""
    found = []
    for bar in section.all("g"):
        label, value = bar.all("text")
        found.append((label.text(), next(bar.all("rect")).attrs["width"], value.text()))
    return found


def test_a_well_formed_page_that_loads_and_runs_nothing() -> None:
    source = as_html([logins(3), Table("Nothing", ("a", "b"), [])], "Mail", "7d", "now")
    page = Page(source)
    assert page.problems == []
    assert page.doctype.lower() == "doctype html"
    (html,) = page.root.all("html")
    assert html.attrs["lang"] == "en"
    assert any(meta.attrs.get("charset") == "utf-8" for meta in page.root.all("meta"))
    assert not list(page.root.all("script"))
    for element in page.root.all():
        assert element.tag not in ("link", "img", "iframe", "object", "embed", "base", "form")
        for name, value in element.attrs.items():
            assert name not in ("src", "href", "srcset", "action", "xlink:href", "background")
            assert not name.startswith("on"), f"<{element.tag} {name}>"
            assert "://" not in value or name == "xmlns", f"<{element.tag} {name}={value!r}>"
            assert "url(" not in value
    (style,) = page.root.all("style")
    assert "url(" not in style.text()
    assert "@import" not in style.text()
    assert "@font-face" not in style.text()
    policy = [m for m in page.root.all("meta") if m.attrs.get("http-equiv")]
    assert policy[0].attrs["content"].startswith("default-src 'none';")


def test_the_header_says_what_when_and_for_which_period() -> None:
    page = page_of([], title="Mail report", period="the last 7 days", generated="2026-12-07")
    (header,) = page.root.all("header")
    assert next(header.all("h1")).text() == "Mail report"
    assert "the last 7 days" in header.text()
    assert "2026-12-07" in header.text()
    assert next(page.root.all("title")).text() == "Mail report (the last 7 days)"


@pytest.mark.parametrize("rows", [1, 3, CHART_ROWS, CHART_ROWS + 1, 25])
def test_a_charted_table_has_one_chart_of_at_most_ten_bars(rows: int) -> None:
    (section,) = page_of([logins(rows)]).sections()
    (svg,) = section.all("svg")
    assert len(list(svg.all("rect"))) == len(list(svg.all("g"))) == min(CHART_ROWS, rows)
    assert len(list(next(section.all("tbody")).all("tr"))) == rows
    caption = next(section.all("figcaption")).text()
    if rows > CHART_ROWS:
        assert caption == f"Top {CHART_ROWS} of {rows} by messages"
    else:
        assert caption == "By messages"


def test_only_charted_tables_with_rows_get_a_chart() -> None:
    unread = Table("Read only", ("login", "messages"), [("a@example.com", 3)])
    empty = Table("Empty", ("login", "messages"), [], chart="messages")
    sections = page_of([logins(3), unread, empty, logins(12)]).sections()
    assert [len(list(s.all("svg"))) for s in sections] == [1, 0, 0, 1]
    assert len(list(page_of([logins(3), unread, empty, logins(12)]).root.all("svg"))) == 2


def test_the_bars_run_from_the_largest_value_down_in_proportion() -> None:
    table = Table(
        "Spam",
        ("login", "marked", "highest score"),
        [("a", 1, 5.0), ("b", 2, 20.0), ("c", 3, 10.0), ("d", 4, 10.0), ("e", 5, 0.0)],
        chart="highest score",
    )
    (section,) = page_of([table]).sections()
    assert bars(section) == [
        ("b", "78.00%", "20.0"),
        # equal values keep the table's order
        ("c", "39.00%", "10.0"),
        ("d", "39.00%", "10.0"),
        ("a", "19.50%", "5.0"),
        ("e", "0.00%", "0.0"),
    ]
    # each bar's value starts where the bar ends
    for bar in section.all("g"):
        rect, value = next(bar.all("rect")), list(bar.all("text"))[1]
        assert value.attrs["x"] == rect.attrs["width"]


def test_a_tiny_value_still_shows_a_bar_and_only_zeros_show_none() -> None:
    table = Table("T", ("login", "n"), [("big", 100_000), ("tiny", 1), ("none", 0)], chart="n")
    (section,) = page_of([table]).sections()
    assert [width for _, width, _ in bars(section)] == ["78.00%", "0.50%", "0.00%"]
    all_zero = Table("T", ("login", "n"), [("a", 0), ("b", 0)], chart="n")
    (section,) = page_of([all_zero]).sections()
    assert [width for _, width, _ in bars(section)] == ["0.00%", "0.00%"]


def test_numbers_are_right_aligned_and_grouped() -> None:
    table = Table("T", ("login", "bytes", "note"), [("a@example.com", 1234567, "x")])
    (section,) = page_of([table]).sections()
    headers = [(th.text(), th.attrs.get("class")) for th in section.all("th")]
    assert headers == [("login", None), ("bytes", "num"), ("note", None)]
    cells = [(td.text(), td.attrs.get("class"), td.attrs["data-label"]) for td in section.all("td")]
    assert cells == [
        ("a@example.com", None, "login"),
        ("1,234,567", "num", "bytes"),
        ("x", None, "note"),
    ]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_come_out_as_text(hostile: str) -> None:
    table = Table(
        hostile,
        ("login", hostile),
        [(hostile, 3), ("b@example.com", 1)],
        chart=hostile,
    )
    source = as_html([table], title=hostile, period=hostile, generated=hostile)
    page = Page(source)
    assert page.problems == []
    assert "<script" not in source.lower()
    assert "<img" not in source.lower()
    assert not list(page.root.all("script"))
    assert not list(page.root.all("img"))
    (section,) = page.sections()
    assert next(page.root.all("h1")).text() == hostile
    assert next(section.all("h2")).text() == hostile
    assert hostile in next(page.root.all("header")).text()
    assert next(section.all("td")).text() == hostile
    assert [th.text() for th in section.all("th")] == ["login", hostile]
    assert next(section.all("td")).attrs["data-label"] == "login"
    assert list(section.all("td"))[1].attrs["data-label"] == hostile
    assert bars(section)[0][0] == hostile
    assert next(section.all("title")).text() == f"{hostile}: 3"


def test_a_long_label_is_shortened_in_the_chart_only() -> None:
    login = "x" * 200 + "@example.com"
    (section,) = page_of([Table("T", ("login", "n"), [(login, 1)], chart="n")]).sections()
    label = bars(section)[0][0]
    assert len(label) == LABEL_LIMIT
    assert label == "x" * (LABEL_LIMIT - 1) + "\u2026"
    assert next(section.all("title")).text() == f"{login}: 1"
    assert next(section.all("td")).text() == login


def test_invisible_characters_are_shown() -> None:
    # U+202E would show "moc.elpmaxe@eve" as "eve@example.com"
    login = "\u202emoc.elpmaxe@eve\x00\x1b[31m"
    (section,) = page_of([Table("T", ("login", "n"), [(login, 1)], chart="n")]).sections()
    shown = "\\u202emoc.elpmaxe@eve\\u0000\\u001b[31m"
    assert next(section.all("td")).text() == shown
    assert bars(section)[0][0] == shown


def test_an_empty_label_still_names_its_bar() -> None:
    table = Table("T", ("login", "n"), [("", 2), ("a@example.com", 1)], chart="n")
    (section,) = page_of([table]).sections()
    assert bars(section)[0][0] == "\u2014"


def test_an_empty_table_says_so() -> None:
    empty = Table("Held for moderation", ("list", "messages"), [], chart="messages")
    first, second = page_of([logins(2), empty]).sections()
    assert "nothing in this period" not in first.text()
    assert next(second.all("h2")).text() == "Held for moderation"
    assert " ".join(second.text().split()) == "Held for moderation nothing in this period"
    assert not list(second.all("table"))


def test_a_chart_needs_a_column_of_numbers() -> None:
    with pytest.raises(ValueError, match="chart column 'score' is not a column"):
        as_html([Table("T", ("login", "n"), [("a", 1)], chart="score")], "t", "p", "g")
    with pytest.raises(ValueError, match="n 'many' is not a number"):
        as_html([Table("T", ("login", "n"), [("a", "many")], chart="n")], "t", "p", "g")


def test_the_template_is_package_data() -> None:
    """An installed postwarden (not an editable one) has only the files these globs
    name."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = settings["tool"]["setuptools"]["package-data"]["postwarden"]
    package = ROOT / "src" / "postwarden"
    templates = list((package / "reports" / "templates").iterdir())
    assert templates
    for template in templates:
        relative = PurePosixPath(template.relative_to(package).as_posix())
        assert any(relative.match(glob) for glob in globs), f"{relative} is not package data"
