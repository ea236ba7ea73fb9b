"""The HTML report in a real browser (headless Chromium): it renders its charts and
tables, says nothing on the console, asks for nothing over the network, lays out on
a phone without sideways scrolling, and leaves screenshots for a person to look at.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages, each ended by a NUL byte, read from fd 3 and written to fd 4). Unlike
the ``CONSOLE`` lines of ``--enable-logging``, which carry no level, the protocol says
what each message is: console calls by type, uncaught exceptions, the browser's own
errors (blocked by the content security policy, failed loads) and its issues.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postwarden.reports.builders import Table, outgoing_spam, smtp_out_usage
from postwarden.reports.html import CHART_ROWS, LONGEST_BAR, as_html
from postwarden.reports.usage import SenderTotals, SpamTotals, UsageTotals

BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")
TIMEOUT = 10.0
HOSTILE = "<script>alert(1)</script>@x"
REASON = (
    "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your"
    " IP address; see https://support.google.com/mail/?p=UnsolicitedRateLimitError_ABCDEFGH"
)
LONG = "a-very-long-local-part-that-nobody-would-type." * 3 + "@subdomain.example.com"


class BrowserError(Exception):
    """The browser answered a command with an error, died, or kept silent."""


@dataclass
class Loaded:
    """What a page did while it loaded, as the browser told it."""

    url: str
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


class Browser:
    """Headless Chromium and one DevTools session per page."""

    def __init__(self, profile: Path, log: Path) -> None:
        assert BROWSER, "no chromium-headless-shell or chromium: run scripts/setup --test"
        commands_in, commands_out = os.pipe()
        replies_in, replies_out = os.pipe()
        # fds 3 and 4 are where the browser looks; dup'ing above 10 first keeps a pipe
        # that happens to be fd 3 or 4 from being overwritten by the other one
        child_in = fcntl.fcntl(commands_in, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(replies_out, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_in)
        os.close(replies_out)
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        arguments = [
            BROWSER,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--mute-audio",
            "about:blank",
        ]
        if os.geteuid() == 0:
            # Chromium will not start as root with its sandbox on (it says so and
            # exits); test machines and containers often run the tests as root, and
            # this browser only opens files these tests wrote.
            arguments.insert(1, "--no-sandbox")
        self.pid = os.posix_spawn(
            BROWSER,
            arguments,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
                (os.POSIX_SPAWN_DUP2, child_in, 3),
                (os.POSIX_SPAWN_DUP2, child_out, 4),
            ],
        )
        for fd in (child_in, child_out, log_fd):
            os.close(fd)
        self.log = log
        self._to = commands_out
        self._from = replies_in
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict[str, Any]] = []

    def close(self) -> None:
        with suppress(BrowserError, OSError):
            self.send("Browser.close")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self._to)
        os.close(self._from)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._events.append(reply)

    def wait_for(self, method: str, session: str) -> None:
        while True:
            for number, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    del self._events[number]
                    return
            self._events.append(self._receive())

    def events(self, session: str) -> list[dict[str, Any]]:
        mine = [event for event in self._events if event.get("sessionId") == session]
        self._events = [event for event in self._events if event.get("sessionId") != session]
        return mine

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise BrowserError(f"no answer in {TIMEOUT:.0f} s; see {self.log}")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                raise BrowserError(f"the browser went away; see {self.log}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    @contextmanager
    def open(
        self, page: Path, width: int, height: int, mobile: bool = False
    ) -> Iterator[tuple[str, Loaded]]:
        """Load a page in a fresh tab of this size: its session, and what it did."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        try:
            yield self._load(target, page, width, height, mobile)
        finally:
            self.send("Target.closeTarget", {"targetId": target})

    def _load(
        self, target: str, page: Path, width: int, height: int, mobile: bool
    ) -> tuple[str, Loaded]:
        session: str = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            session,
        )
        for domain in ("Page", "Runtime", "Log", "Network", "Audits"):
            self.send(f"{domain}.enable", session=session)
        url = page.as_uri()
        navigated = self.send("Page.navigate", {"url": url}, session)
        if "errorText" in navigated:
            raise BrowserError(f"{url}: {navigated['errorText']}")
        self.wait_for("Page.loadEventFired", session)
        # a round trip after the load: every event of the load has arrived before it
        self.evaluate(session, "document.readyState")
        return session, self.since(session, url)

    def since(self, session: str, url: str) -> Loaded:
        """What the page did since it loaded, or since the last time this was asked."""
        return _what_it_did(url, self.events(session))

    def evaluate(self, session: str, expression: str) -> Any:
        answer = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def emulate(self, session: str, media: str = "", dark: bool = False) -> None:
        scheme = {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}
        self.send("Emulation.setEmulatedMedia", {"media": media, "features": [scheme]}, session)

    def screenshot(self, session: str, target: Path) -> Path:
        """The whole page, not only the window's height."""
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session,
        )
        target.write_bytes(base64.b64decode(shot["data"]))
        return target

    def pdf(self, session: str, target: Path) -> Path:
        """The page as printed on A4, as the print dialogue would."""
        printed = self.send("Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69}, session)
        target.write_bytes(base64.b64decode(printed["data"]))
        return target


def _what_it_did(url: str, events: list[dict[str, Any]]) -> Loaded:
    loaded = Loaded(url)
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            words = " ".join(
                str(arg.get("value", arg.get("description"))) for arg in params["args"]
            )
            loaded.console.append(f"{params['type']}: {words}")
            if params["type"] in ("error", "warning", "assert"):
                loaded.problems.append(f"console.{params['type']}: {words}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            described = details.get("exception", {}).get("description", details["text"])
            loaded.problems.append(f"uncaught: {described}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            loaded.problems.append(f"{entry['source']} {entry['level']}: {entry['text']}")
        elif method == "Audits.issueAdded":
            loaded.problems.append(f"issue: {params['issue']['code']}")
        elif method == "Network.requestWillBeSent" and params["request"]["url"] != url:
            loaded.requests.append(params["request"]["url"])
    return loaded


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    home = tmp_path_factory.mktemp("browser")
    started = Browser(home / "profile", home / "browser.log")
    try:
        yield started
    finally:
        started.close()


def _sent(
    login: str, messages: int, spam: tuple[str, float] | None = None
) -> tuple[SenderTotals, list[SpamTotals]]:
    held = 1 if spam is not None else 0
    sent = SenderTotals(
        login, login.rpartition("@")[2], messages, 2 * messages, 4000 * messages, held, 0
    )
    return sent, [SpamTotals(login, spam[0], 1, spam[1])] if spam is not None else []


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report made by the real builders: twelve logins (so that the charts show the
    top ten), one of them hostile, one very long; then a table of text with a long
    reason in it, and a table with nothing in it."""
    made = [
        _sent("alice@example.com", 240, ("quarantine", 11.2)),
        _sent("bob@example.org", 130, ("reject", 17.5)),
        _sent(HOSTILE, 95, ("add header", 6.4)),
        _sent(LONG, 60),
        _sent('"quoted" & co@example.net', 41, ("add header", 7.9)),
        _sent("newsletter@lists.example.com", 33),
        _sent("carol@example.com", 20),
        _sent("dave@example.com", 12),
        _sent("erin@example.org", 7),
        _sent("frank@example.org", 4),
        _sent("grace@example.com", 2),
        _sent("heidi@example.com", 1),
    ]
    rows = UsageTotals([sent for sent, _ in made], [spam for _, spams in made for spam in spams])
    tables = [
        *smtp_out_usage(rows),
        *outgoing_spam(rows),
        Table(
            "Most frequent deferral and bounce reasons by provider",
            ("provider", "status", "reason", "count"),
            [
                ("gmail.com", "deferred", REASON, 31),
                ("outlook.com", "bounced", "550 5.7.1 Unfortunately, messages from [192.0.2.7]", 4),
            ],
        ),
        Table("Held for moderation by list", ("list", "messages"), [], chart="messages"),
    ]
    page = tmp_path_factory.mktemp("report") / "report.html"
    page.write_text(
        as_html(tables, "Mail report for mail.example.com", "the last 7 days", "2026-12-07 06:00"),
        encoding="utf-8",
    )
    return page


LAYOUT = """(() => {
  const box = (element) => {
    const r = element.getBoundingClientRect();
    return {left: r.left, right: r.right, width: r.width};
  };
  return {
    pageWidth: document.documentElement.scrollWidth,
    cutOff: [...document.querySelectorAll('.scroll')].some((d) => d.scrollWidth > d.clientWidth),
    windowWidth: window.innerWidth,
    scripts: document.scripts.length,
    empty: [...document.querySelectorAll('.empty')].map((p) => p.textContent),
    tables: document.querySelectorAll('table').length,
    charts: [...document.querySelectorAll('svg')].map((svg) => ({
      box: box(svg),
      bars: [...svg.querySelectorAll('g')].map((g) => {
        const [label, value] = g.querySelectorAll('text');
        return {
          label: label.textContent, labelBox: box(label),
          bar: box(g.querySelector('rect')),
          value: value.textContent, valueBox: box(value),
        };
      }),
    })),
  };
})()"""


VIEWS = {
    # name: width, height, mobile, media, dark
    "desktop": (1000, 800, False, "", False),
    "phone": (360, 780, True, "", False),
    "tablet": (700, 900, True, "", False),
    "dark": (1000, 800, False, "", True),
    "print": (794, 1123, False, "print", False),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_the_report_renders_cleanly(
    view: str,
    browser: Browser,
    report: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    width, height, mobile, media, dark = VIEWS[view]
    with browser.open(report, width, height, mobile) as (session, loaded):
        browser.emulate(session, media, dark)
        layout = browser.evaluate(session, LAYOUT)
        shot = browser.screenshot(session, tmp_path / f"report-{view}.png")
        printed = browser.pdf(session, tmp_path / "report.pdf") if media == "print" else None
        # emulating another screen or printing may warn too
        late = browser.since(session, report.as_uri())
    assert loaded.problems == []
    assert loaded.console == []
    assert loaded.requests == [], "the report must load nothing"
    assert late.problems == []
    assert late.requests == []
    assert layout["scripts"] == 0
    assert layout["tables"] == 4
    assert layout["empty"] == ["nothing in this period"]
    assert layout["pageWidth"] <= layout["windowWidth"], "the page scrolls sideways"
    assert not layout["cutOff"], "a table is wider than the page"
    login_chart, domain_chart, spam_chart = layout["charts"]
    assert len(login_chart["bars"]) == CHART_ROWS
    assert len(domain_chart["bars"]) == 6
    assert len(spam_chart["bars"]) == 4
    assert login_chart["bars"][0]["label"] == "alice@example.com"
    assert login_chart["bars"][2]["label"] == HOSTILE
    assert login_chart["bars"][3]["label"].endswith("\u2026")
    for chart in layout["charts"]:
        right = chart["box"]["right"]
        longest = chart["bars"][0]["bar"]["width"]
        assert longest == pytest.approx(chart["box"]["width"] * LONGEST_BAR / 100, abs=1)
        for bar in chart["bars"]:
            assert bar["labelBox"]["right"] <= right + 0.5, f"{bar['label']} is cut off"
            assert bar["valueBox"]["left"] >= bar["bar"]["right"], "a value covers its bar"
            assert bar["valueBox"]["right"] <= right + 0.5, f"{bar['value']} is cut off"

    assert shot.read_bytes().startswith(b"\x89PNG")
    with capsys.disabled():
        print(f"\nscreenshot ({view}): {shot}")
    if printed is not None:
        pdf = printed.read_bytes()
        assert pdf.startswith(b"%PDF")
        # each page is an object of /Type /Page; /Type /Pages is the tree that holds them
        assert len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2
        with capsys.disabled():
            print(f"printed: {printed}")


def test_the_dom_has_the_charts_and_the_hostile_login_as_text(
    browser: Browser, report: Path
) -> None:
    with browser.open(report, 1000, 800) as (session, _):
        dom = browser.evaluate(session, "document.documentElement.outerHTML")
        texts = browser.evaluate(
            session, "[...document.querySelectorAll('td:first-child')].map((td) => td.textContent)"
        )
    assert dom.count("<svg") == 3
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@x" in dom
    assert HOSTILE in texts
    assert LONG in texts
    assert '"quoted" & co@example.net' in texts


BROKEN = {
    "console error": "<script>console.error('boom')</script>",
    "console warning": "<script>console.warn('careful')</script>",
    "syntax error": "<script>var = ;</script>",
    "uncaught exception": "<script>undefinedFunction()</script>",
    "blocked by the policy": (
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'\">"
        "<script>document.title = 'ran'</script>"
    ),
    "missing image": "<img src='missing.png' alt=''>",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_page_is_caught(name: str, browser: Browser, tmp_path: Path) -> None:
    """The detection above is only worth something if it sees these."""
    page = tmp_path / "broken.html"
    page.write_text(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>t</title>"
        f"{BROKEN[name]}</head><body><p>text</p></body></html>",
        encoding="utf-8",
    )
    with browser.open(page, 800, 600) as (_, loaded):
        pass
    assert loaded.problems, f"{name} went unnoticed"


def test_a_request_for_anything_else_is_caught(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "style.css").write_text("p { color: black; }", encoding="utf-8")
    page = tmp_path / "linked.html"
    page.write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>t</title>"
        "<link rel='stylesheet' href='style.css'></head><body><p>text</p></body></html>",
        encoding="utf-8",
    )
    with browser.open(page, 800, 600) as (_, loaded):
        pass
    assert loaded.problems == []
    assert loaded.requests == [(tmp_path / "style.css").as_uri()]
