"""fail2ban: the rendered jails and filters, checked with fail2ban's own tools.

- ``fail2ban-client -t`` and ``-d`` read Debian's /etc/fail2ban with the rendered
  files laid over it (a copy, with Debian's sshd jail off and the log files in
  tmp_path);
- ``fail2ban-regex`` runs each rendered filter over the sample logs in
  tests/fixtures/logs, whose ``# expect:`` lines say what must match;
- a fail2ban server started on that copy bans after ``maxretry`` failures;
- ``nft -c`` accepts the ports the ban action will name.
"""

from __future__ import annotations

import ast
import configparser
import filecmp
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.policyd.settings import PolicydSettings
from postwarden.render.dovecot import render_dovecot
from postwarden.render.fail2ban import (
    AUTH_JAIL,
    DOVECOT_LOG,
    HARVEST_JAIL,
    JAIL_FILE,
    NO_JAILS,
    POLICYD_LOG,
    POSTFIX_LOG,
    render_fail2ban,
)
from postwarden.render.host import HostSettings
from postwarden.render.postfix import render_postfix
from postwarden.render.templating import header
from postwarden.render.tree import RenderedFile
from tests.conftest import FIXTURES, MINIMAL_POLICY
from tests.render.conftest import SOURCE, write_files

FAIL2BAN_ETC = Path("/etc/fail2ban")
LOGS = FIXTURES / "logs"
SAMPLE_LOGS = sorted(LOGS.glob("*.log"))
INJECTED = "203.0.113.66"
"""The address attackers write into fields they control; no filter may return it."""

FILTERS = {
    AUTH_JAIL: "/etc/fail2ban/filter.d/postwarden-auth.conf",
    HARVEST_JAIL: "/etc/fail2ban/filter.d/postwarden-harvest.conf",
}
LOG_FILES = (POSTFIX_LOG, DOVECOT_LOG, POLICYD_LOG)
# Debian's fail2ban.conf does not set allowipv6; fail2ban warns about it on every run.
KNOWN_WARNING = "'allowipv6' not defined"

BAD_SMTP_SESSIONS = """\
abuse:
  bad_smtp_sessions:
{triggers}    within: 5m
    ban_for: 2h
"""


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    for tool in ("fail2ban-client", "fail2ban-regex", "nft"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/setup --test"


def render(loaded: LoadedPolicy, host: HostSettings | None = None) -> list[RenderedFile]:
    return render_fail2ban(loaded.policy, loaded.secrets, host or HostSettings(), SOURCE)


def by_path(files: list[RenderedFile]) -> dict[str, str]:
    return {f.path: f.content for f in files}


def parse_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


@pytest.fixture
def load_variant(write_policy: Callable[[str], Path]) -> Callable[[str | None], LoadedPolicy]:
    """The minimal policy with the given `bad_smtp_sessions` triggers (or none)."""

    def load(triggers: str | None) -> LoadedPolicy:
        text = MINIMAL_POLICY
        if triggers is not None:
            text += BAD_SMTP_SESSIONS.format(triggers=triggers)
        return load_policy(write_policy(text))

    return load


# ------------------------------------------------------- the rendered files


def test_jail_settings_follow_the_example_policy(example: LoadedPolicy) -> None:
    jails = parse_ini(by_path(render(example))[JAIL_FILE])
    rules = example.policy.abuse.bad_smtp_sessions
    assert rules is not None

    assert jails.sections() == [AUTH_JAIL, HARVEST_JAIL]
    assert jails.defaults() == {
        "banaction": "nftables-multiport",
    }
    auth, harvest = jails[AUTH_JAIL], jails[HARVEST_JAIL]
    # the example: auth_failures 5, invalid_recipients 10, within 10m, ban_for 1h; the
    # failed logins are counted by the daemon, whose one ban line is the ban
    assert (auth.getint("maxretry"), harvest.getint("maxretry")) == (1, 10)
    assert harvest.getint("maxretry") == rules.invalid_recipients
    for jail in (auth, harvest):
        assert jail.getint("findtime") == 600 == rules.within
        assert jail.getint("bantime") == 3600 == rules.ban_for
        assert jail["enabled"] == "true"
        assert jail["backend"] == "polling"
        assert jail["usedns"] == "no"
    assert auth["filter"] == "postwarden-auth"
    assert harvest["filter"] == "postwarden-harvest"
    assert auth["logpath"].split() == ["/var/log/postwarden/policyd.log"]
    assert harvest["logpath"].split() == [
        "/var/log/postfix.log",
        "/var/log/postwarden/policyd.log",
    ]
    assert auth["port"] == "smtp,submission,submissions,imap,imaps"
    assert harvest["port"] == "smtp,submission,submissions,imap,imaps"


@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        ("    auth_failures: 3\n", [AUTH_JAIL]),
        ("    invalid_recipients: 7\n", [HARVEST_JAIL]),
        ("    auth_failures: 3\n    invalid_recipients: 7\n", [AUTH_JAIL, HARVEST_JAIL]),
        (None, []),
    ],
    ids=["auth-only", "harvest-only", "both", "not-configured"],
)
def test_a_jail_for_each_trigger_the_policy_sets(
    load_variant: Callable[[str | None], LoadedPolicy],
    triggers: str | None,
    expected: list[str],
) -> None:
    files = by_path(render(load_variant(triggers)))
    jails = parse_ini(files[JAIL_FILE])
    assert jails.sections() == expected
    for name in expected:
        assert jails[name].getint("findtime") == 300
        assert jails[name].getint("bantime") == 7200
        # failed logins are counted by the daemon: its one ban line is the ban
        assert jails[name].getint("maxretry") == (1 if name == AUTH_JAIL else 7)
    # the file and both filters are always there: a deploy replaces the old jails,
    # and a jail never names a missing filter
    assert sorted(files) == sorted([JAIL_FILE, *FILTERS.values()])
    assert (f"# {NO_JAILS}\n" in files[JAIL_FILE]) == (not expected)
    assert jails.defaults()["banaction"] == "nftables-multiport"


def test_ports_follow_the_host_settings(example: LoadedPolicy) -> None:
    host = HostSettings(smtpd_ports=[25, 2525], submission_port=None, submissions_port=465)
    jails = parse_ini(by_path(render(example, host))[JAIL_FILE])
    assert jails[AUTH_JAIL]["port"] == "smtp,2525,submissions,imap,imaps"
    assert jails[HARVEST_JAIL]["port"] == "smtp,2525,submissions,imap,imaps"
    assert jails[HARVEST_JAIL]["banaction"] == "nftables-multiport"

    # no SMTP port: both still close IMAP to the client they ban
    host = HostSettings(smtpd_ports=[], submission_port=None, submissions_port=None)
    jails = parse_ini(by_path(render(example, host))[JAIL_FILE])
    assert jails[AUTH_JAIL]["port"] == "imap,imaps"
    assert jails[HARVEST_JAIL]["port"] == "imap,imaps"


def test_the_jails_read_the_files_the_services_write(example: LoadedPolicy) -> None:
    """The log paths are named in each service's own renderer or settings too."""
    host = HostSettings()
    main_cf = by_path(render_postfix(example.policy, example.secrets, host, SOURCE))[
        "/etc/postfix/main.cf"
    ]
    dovecot_conf = by_path(render_dovecot(example.policy, example.secrets, host, SOURCE))[
        "/etc/dovecot/dovecot.conf"
    ]
    assert re.findall(r"^maillog_file = (.*)$", main_cf, re.MULTILINE) == [POSTFIX_LOG]
    assert re.findall(r"^log_path = (.*)$", dovecot_conf, re.MULTILINE) == [DOVECOT_LOG]
    assert PolicydSettings().log_file == POLICYD_LOG


def test_every_file_is_managed(example: LoadedPolicy) -> None:
    for rendered in render(example):
        assert rendered.content.startswith(header(SOURCE)), rendered.path
        assert rendered.service == "fail2ban"
        assert (rendered.mode, rendered.owner, rendered.group) == (0o644, "root", "root")


# Dovecot's login name may hold anything, ">" too: its regex skips it with `.*` and
# pins <ADDR> to the tail Dovecot writes itself, up to `$` (see fail2ban.py).
SKIPS_TO_ANCHORED_TAIL = "user=<.*>, "


def test_every_failregex_is_anchored(example: LoadedPolicy) -> None:
    files = by_path(render(example))
    for path in FILTERS.values():
        regexes = parse_ini(files[path])["Definition"]["failregex"].splitlines()
        assert len(regexes) == (1 if path == FILTERS[AUTH_JAIL] else 2)
        for regex in regexes:
            assert regex.startswith("^\\s*"), regex
            before, _, after = regex.partition("<ADDR>")
            if SKIPS_TO_ANCHORED_TAIL in before:
                assert after.endswith("$"), regex
                assert ".*" not in after, regex
                before = before.replace(SKIPS_TO_ANCHORED_TAIL, "")
            assert ".*" not in before, regex


def test_rendering_is_byte_identical(example: LoadedPolicy, tmp_path: Path) -> None:
    first = write_files(render(example), tmp_path / "first")
    second = write_files(render(example), tmp_path / "second")
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(names) == 3
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert (mismatch, errors) == ([], [])


# ------------------------------------------------- fail2ban reads the config


def fail2ban_copy(files: list[RenderedFile], tmp_path: Path) -> Path:
    """Debian's /etc/fail2ban with the rendered files over it; the jails' logs in tmp_path."""
    root = write_files(files, tmp_path / "root")
    config = tmp_path / "fail2ban"
    shutil.copytree(FAIL2BAN_ETC, config)
    shutil.copytree(root / "etc" / "fail2ban", config, dirs_exist_ok=True)
    # test scaffolding, not rendered: this machine has no sshd log for Debian's jail
    (config / "jail.d" / "zz-test.local").write_text("[sshd]\nenabled = false\n")
    jail_file = config / "jail.d" / "postwarden.local"
    text = jail_file.read_text()
    jail_file.write_text(text.replace("/var/log/", f"{tmp_path}/var/log/"))
    for path in LOG_FILES:
        log = tmp_path / path.lstrip("/")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
    return config


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
    )


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if re.search(r"\b(WARNING|ERROR)\b", line) and KNOWN_WARNING not in line
    ]


@pytest.mark.parametrize("triggers", [None, "    auth_failures: 3\n"], ids=["no-jails", "auth"])
def test_fail2ban_accepts_variants(
    load_variant: Callable[[str | None], LoadedPolicy], triggers: str | None, tmp_path: Path
) -> None:
    result = run(
        "fail2ban-client", "-c", fail2ban_copy(render(load_variant(triggers)), tmp_path), "-t"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: configuration test is successful" in result.stdout
    assert problems(result) == []


def dump(config: Path) -> tuple[list[list[Any]], subprocess.CompletedProcess[str]]:
    result = run("fail2ban-client", "-c", config, "-d")
    assert result.returncode == 0, result.stdout + result.stderr
    stream = [ast.literal_eval(line) for line in result.stdout.splitlines() if line.startswith("[")]
    return stream, result


def test_fail2ban_reads_the_jails_as_rendered(example: LoadedPolicy, tmp_path: Path) -> None:
    config = fail2ban_copy(render(example), tmp_path)
    result = run("fail2ban-client", "-c", config, "-t")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: configuration test is successful" in result.stdout

    stream, result = dump(config)
    assert problems(result) == []  # e.g. "Wrong value for 'maxretry'"
    assert ["start", AUTH_JAIL] in stream
    assert ["start", HARVEST_JAIL] in stream
    assert ["start", "sshd"] not in stream
    for jail, maxretry, logs in (
        (AUTH_JAIL, 1, (POLICYD_LOG,)),
        (HARVEST_JAIL, 10, (POSTFIX_LOG, POLICYD_LOG)),
    ):
        assert ["add", jail, "polling"] in stream
        assert ["set", jail, "maxretry", maxretry] in stream
        assert ["set", jail, "findtime", "600"] in stream
        assert ["set", jail, "bantime", "3600"] in stream
        assert ["set", jail, "datepattern", "{^LN-BEG}"] in stream
        assert [c[3] for c in stream if c[:3] == ["set", jail, "addlogpath"]] == [
            f"{tmp_path}{log}" for log in logs
        ]
        assert [c[3] for c in stream if c[:3] == ["set", jail, "addaction"]] == [
            "nftables-multiport"
        ]


@dataclass(frozen=True)
class Breakage:
    message: str
    file: str = ""
    old: str = ""
    new: str = ""
    missing_logs: tuple[str, ...] = ()


BREAKAGES = {
    "unknown-filter": Breakage(
        "Unable to read the filter 'postwarden-missing'",
        "jail.d/postwarden.local",
        "filter = postwarden-auth\n",
        "filter = postwarden-missing\n",
    ),
    "unknown-banaction": Breakage(
        "Unable to read action 'nftables-missing'",
        "jail.d/postwarden.local",
        "banaction = nftables-multiport\n",
        "banaction = nftables-missing\n",
    ),
    "not-ini": Breakage(
        "File contains no section headers",
        "filter.d/postwarden-harvest.conf",
        "[Definition]\n",
        "Definition\n",
    ),
    "no-log-file": Breakage(
        f"Have not found any log file for {AUTH_JAIL} jail",
        missing_logs=(POLICYD_LOG,),
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=list(BREAKAGES))
def test_fail2ban_rejects_a_broken_copy(
    example: LoadedPolicy, tmp_path: Path, breakage: Breakage
) -> None:
    config = fail2ban_copy(render(example), tmp_path)
    if breakage.file:
        target = config / breakage.file
        text = target.read_text()
        assert text.count(breakage.old) == 1
        target.write_text(text.replace(breakage.old, breakage.new))
    for log in breakage.missing_logs:
        (tmp_path / log.lstrip("/")).unlink()

    result = run("fail2ban-client", "-c", config, "-t")
    assert result.returncode != 0
    assert breakage.message in result.stdout + result.stderr


# ------------------------------------------------ the filters, line by line


@dataclass(frozen=True)
class Sample:
    line: str
    jail: str | None
    address: str | None


def samples(log: Path) -> list[Sample]:
    """The log lines of a fixture with what their `# expect:` line says."""
    found: list[Sample] = []
    expect: list[str] | None = None
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("# expect:"):
            assert expect is None, f"{log.name}:{number}: two expect lines"
            expect = line.removeprefix("# expect:").split()
            assert expect == ["nothing"] or (len(expect) == 2 and expect[0] in FILTERS), line
        elif line.startswith("#") or not line:
            assert expect is None, f"{log.name}:{number}: no log line after expect"
        else:
            assert expect is not None, f"{log.name}:{number}: log line without expect"
            jail, address = (None, None) if expect == ["nothing"] else expect
            found.append(Sample(line, jail, address))
            expect = None
    return found


def line_time(line: str) -> datetime:
    """The stamp a sample line starts with; syslog stamps get this year, in UTC."""
    stamp = line.split(" ", 1)[0]
    if "T" in stamp:
        return datetime.fromisoformat(stamp)
    parsed = datetime.strptime(line[:15], "%b %d %H:%M:%S")
    return parsed.replace(year=datetime.now(UTC).year, tzinfo=UTC)


def fail2ban_regex(log: Path, filter_file: Path) -> dict[str, tuple[str, float]]:
    """Matched lines of the log: line -> (address, time), as fail2ban-regex finds them."""
    result = run(
        "fail2ban-regex", "--timezone=UTC", "--out", "<ip>\t<time>\t<msg>", log, filter_file
    )
    assert result.returncode == 0, result.stdout + result.stderr
    matched: dict[str, tuple[str, float]] = {}
    for row in result.stdout.splitlines():
        address, stamp, line = row.split("\t", 2)
        assert line not in matched, f"matched twice: {line}"
        matched[line] = (address, float(stamp))
    return matched


@pytest.fixture(scope="module")
def filter_files(
    example: LoadedPolicy, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = write_files(render(example), tmp_path_factory.mktemp("filters") / "root")
    return {jail: root / path.lstrip("/") for jail, path in FILTERS.items()}


def test_the_samples_cover_both_jails_and_injections() -> None:
    assert [p.name for p in SAMPLE_LOGS] == ["dovecot.log", "policyd.log", "postfix.log"]
    every = [s for log in SAMPLE_LOGS for s in samples(log)]
    for jail in FILTERS:
        addresses = {s.address for s in every if s.jail == jail}
        assert any(":" in str(a) for a in addresses), f"{jail}: no IPv6 sample"
        assert any("." in str(a) for a in addresses), f"{jail}: no IPv4 sample"
    assert sum(INJECTED in s.line for s in every) >= 15
    assert all(s.address != INJECTED for s in every)


@pytest.mark.parametrize("jail", FILTERS)
@pytest.mark.parametrize("log", SAMPLE_LOGS, ids=[p.name for p in SAMPLE_LOGS])
def test_filter_matches_exactly_the_expected_lines(
    filter_files: dict[str, Path], jail: str, log: Path
) -> None:
    matched = fail2ban_regex(log, filter_files[jail])
    expected = {s.line: s.address for s in samples(log) if s.jail == jail}
    assert {line: address for line, (address, _) in matched.items()} == expected
    assert all(INJECTED not in address for address, _ in matched.values())
    # the date is read from both kinds of stamp, at the right moment
    for line, (_, stamp) in matched.items():
        found = datetime.fromtimestamp(stamp, UTC)
        wanted = line_time(line).replace(microsecond=0)  # fail2ban-regex prints seconds
        if "T" in line.split(" ", 1)[0]:
            assert found == wanted, line
        else:  # syslog stamps have no year: fail2ban picks one
            assert found.replace(year=wanted.year) == wanted, line


NAIVE = {
    AUTH_JAIL: [r"ban client=<ADDR> reason=auth_failures"],
    HARVEST_JAIL: [
        r"^.*RCPT from \S+\[<ADDR>\]: 550 5\.1\.1 .*User unknown",
        r"ban client=<ADDR> reason=invalid_recipients",
    ],
}


@pytest.mark.parametrize("jail", NAIVE)
def test_the_injection_samples_fool_unanchored_regexes(jail: str, tmp_path: Path) -> None:
    """The samples are strong enough: regexes without anchors ban the injected address."""
    for number, regex in enumerate(NAIVE[jail]):
        naive = tmp_path / f"naive-{number}.conf"
        naive.write_text(f"[Definition]\nfailregex = {regex}\ndatepattern = {{^LN-BEG}}\n")
        fooled = [
            log.name
            for log in SAMPLE_LOGS
            if any(a == INJECTED for a, _ in fail2ban_regex(log, naive).values())
        ]
        assert fooled, regex


def test_fail2ban_regex_refuses_a_broken_filter(
    filter_files: dict[str, Path], tmp_path: Path
) -> None:
    """Only fail2ban-regex (and the server) compile the regexes; `fail2ban-client -t` does not."""
    text = filter_files[HARVEST_JAIL].read_text()
    for old, new, message in (
        ("failregex = ^", "failregex = ^(", "Unable to compile regular expression"),
        ("\\[<ADDR>\\]", "\\[<HOST6>\\]", "No failure-id group"),
    ):
        broken = tmp_path / "broken.conf"
        assert old in text
        broken.write_text(text.replace(old, new, 1))
        result = run("fail2ban-regex", LOGS / "postfix.log", broken)
        assert result.returncode != 0
        assert message in result.stdout + result.stderr


# --------------------------------------------- nftables takes the ban ports


def test_nft_accepts_the_ports_of_the_ban_action(example: LoadedPolicy, tmp_path: Path) -> None:
    stream, _ = dump(fail2ban_copy(render(example), tmp_path))
    actions = [c for c in stream if c[0] == "multi-set" and c[3] == "nftables-multiport"]
    assert [c[1] for c in actions] == [AUTH_JAIL, HARVEST_JAIL]
    script = tmp_path / "ports.nft"
    for action in actions:
        options = dict(action[4])
        start = options["actionstart"]
        assert f"$(echo '{options['port']}' | sed s/:/-/g)" in start
        script.write_text(
            "table inet postwarden-check {\n"
            "  set banned { type ipv4_addr; }\n"
            "  chain input { type filter hook input priority -1;\n"
            f"    tcp dport {{ {options['port']} }} ip saddr @banned reject; }}\n"
            "}\n"
        )
        result = run("nft", "--check", "--file", script)  # checks, changes nothing
        assert result.returncode == 0, result.stderr
    script.write_text(script.read_text().replace("submission", "submision"))
    assert run("nft", "--check", "--file", script).returncode != 0


# ------------------------------------------------ a running fail2ban server


@dataclass(frozen=True)
class Feed:
    """Log lines for a live jail: `{stamp}` is filled in when written."""

    jail: str
    address: str
    failures: list[tuple[str, str]]
    """(log file, line) pairs, each a failure of `address`; used in turn."""
    decoys: list[tuple[str, str]]
    """Lines naming the injected address that count for nobody."""


SYSLOG = "%b %d %H:%M:%S"
ISO = "%Y-%m-%dT%H:%M:%S+00:00"

FEEDS = {
    AUTH_JAIL: Feed(
        AUTH_JAIL,
        "192.0.2.7",
        [
            (
                POLICYD_LOG,
                "{iso} postwarden-policyd[4321]: ban client=192.0.2.7 "
                "reason=auth_failures count=5 within=600s for=3600s",
            ),
        ],
        [
            # a wrong password, or a login the daemon refused: the daemon counts them
            (
                POSTFIX_LOG,
                "{syslog} mail postfix/submission/smtpd[1234]: warning: unknown[192.0.2.7]: "
                "SASL PLAIN authentication failed: (reason unavailable), "
                "sasl_username=alice@example.com",
            ),
            (
                DOVECOT_LOG,
                "{syslog} imap-login: Info: Disconnected: Connection closed (auth failed, "
                "1 attempts in 2 secs): user=<alice@example.com>, method=PLAIN, rip=192.0.2.7, "
                "lip=127.0.0.1, TLS, session=<5iu0BH1hCOR/AAAB>",
            ),
            (
                POLICYD_LOG,
                "{iso} postwarden-policyd[4321]: refused login=alice@example.com "
                "client=192.0.2.7 reason=suspended",
            ),
        ],
    ),
    HARVEST_JAIL: Feed(
        HARVEST_JAIL,
        "2001:db8::9",
        [
            (
                POSTFIX_LOG,
                "{syslog} mail postfix/smtpd[1250]: NOQUEUE: reject: RCPT from "
                "unknown[2001:db8::9]: 550 5.1.1 <nobody@example.com>: Recipient address "
                "rejected: User unknown in virtual mailbox table; from=<x@example.net> "
                "to=<nobody@example.com> proto=ESMTP helo=<probe>",
            ),
            (
                POLICYD_LOG,
                "{iso} postwarden-policyd[4321]: ban client=2001:db8::9 "
                "reason=invalid_recipients count=10 within=600s for=3600s",
            ),
        ],
        [
            (
                POSTFIX_LOG,
                "{syslog} mail postfix/smtpd[1256]: NOQUEUE: reject: RCPT from "
                "unknown[192.0.2.14]: 554 5.7.1 <nobody@example.org>: Relay access denied; "
                "from=<x@example.net> to=<nobody@example.org> proto=ESMTP helo=<x RCPT from "
                "unknown[203.0.113.66]: 550 5.1.1 <a@example.com>: Recipient address "
                "rejected: User unknown in virtual mailbox table;>",
            ),
            (
                POLICYD_LOG,
                "{iso} postwarden-policyd[4321]: count client=192.0.2.63 helo=<x ban "
                "client=203.0.113.66 reason=invalid_recipients count=10 within=600s "
                "for=3600s> reason=invalid_recipients count=3",
            ),
        ],
    ),
}


@pytest.fixture
def live_config(example: LoadedPolicy, tmp_path: Path) -> Iterator[Path]:
    """A fail2ban server on the copy; bans go to the dummy action, not the firewall."""
    config = fail2ban_copy(render(example), tmp_path)
    (config / "fail2ban.d" / "zz-test.local").write_text(
        "[Definition]\n"
        f"logtarget = {tmp_path}/fail2ban.log\n"
        f"socket = {tmp_path}/fail2ban.sock\n"
        f"pidfile = {tmp_path}/fail2ban.pid\n"
        "dbfile = :memory:\n"
    )
    with (config / "jail.d" / "zz-test.local").open("a") as scaffolding:
        scaffolding.write(f"\n[DEFAULT]\nbanaction = dummy[target={tmp_path}/dummy.state]\n")
    pidfile = tmp_path / "fail2ban.pid"
    try:
        started = run("fail2ban-client", "-c", config, "start")
        assert started.returncode == 0, started.stdout + started.stderr
        yield config
    finally:
        # the server may be up even when a jail failed to start
        stopped = run("fail2ban-client", "-c", config, "stop")
        if stopped.returncode != 0 and pidfile.exists():
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)


def jail_status(config: Path, jail: str) -> dict[str, str]:
    result = run("fail2ban-client", "-c", config, "status", jail)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = (line.partition(":") for line in result.stdout.splitlines())
    return {key.strip("|-` "): value.strip() for key, _, value in rows if value}


def wait_for(config: Path, jail: str, key: str, value: str) -> dict[str, str]:
    deadline = time.monotonic() + 20
    while True:
        status = jail_status(config, jail)
        if status.get(key) == value or time.monotonic() > deadline:
            return status
        time.sleep(0.25)


@pytest.mark.parametrize("jail", FEEDS)
def test_a_running_fail2ban_bans_after_maxretry_failures(
    live_config: Path, tmp_path: Path, jail: str
) -> None:
    feed = FEEDS[jail]
    maxretry = 1 if jail == AUTH_JAIL else 10

    def write(log: str, line: str) -> None:
        now = datetime.now().astimezone()
        text = line.format(syslog=now.strftime(SYSLOG), iso=now.astimezone(UTC).strftime(ISO))
        with (tmp_path / log.lstrip("/")).open("a", encoding="utf-8") as out:
            out.write(text + "\n")

    # the decoys, more often than any maxretry: they count for nobody
    for number in range(max(maxretry - 1, 6)):
        if number < maxretry - 1:
            write(*feed.failures[number % len(feed.failures)])
        for decoy in feed.decoys:
            write(*decoy)
    time.sleep(2)  # the polling backend reads each file about once a second
    status = wait_for(live_config, jail, "Total failed", str(maxretry - 1))
    assert status["Total failed"] == str(maxretry - 1)
    assert status["Currently banned"] == "0"

    write(*feed.failures[0])
    status = wait_for(live_config, jail, "Banned IP list", feed.address)
    assert status["Banned IP list"] == feed.address
    assert status["Total failed"] == str(maxretry)
