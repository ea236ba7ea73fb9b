"""fail2ban: ban the client IPs of bad SMTP and IMAP sessions (``abuse.bad_smtp_sessions``).

Two jails, each only when its trigger is set in the policy:

- ``postwarden-auth`` follows postwarden-policyd's own bans for failed logins.
  The daemon hears of every login from Dovecot (IMAP, POP3, and SMTP AUTH, which
  Postfix asks Dovecot about) and counts only wrong passwords. Postfix's and
  Dovecot's own failure lines cannot tell those from logins the daemon refused
  (a suspended account, an expired password, every login while the daemon is
  down and the fail mode is closed): counted, the phones of one suspended user
  would get the office's address banned, and a stopped daemon every user's.
- ``postwarden-harvest`` counts unknown local recipients: Postfix's rejections,
  and the ban lines postwarden-policyd writes when it has counted enough itself.

Both read the log files the services write themselves (no syslog, no journal on
the host), with ``backend = polling``, and ban with nftables. The jail file is
always rendered, with no jails in it when the policy sets no trigger, so that it
replaces one that had jails; the two filters are always rendered too, so a jail
never names a filter that is missing.

The filters' regexes are anchored at both ends where the line's tail is written
by the service itself: text a client controls (HELO name, addresses, login
names) can never supply the address that is banned.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.policy.models import Policy
from postwarden.policy.models.abuse import BadSmtpSessions
from postwarden.policy.secrets import Secrets
from postwarden.render.guard import continued
from postwarden.render.host import HostSettings
from postwarden.render.templating import render_template
from postwarden.render.tree import RenderedFile

FAIL2BAN_DIR = "/etc/fail2ban"
JAIL_FILE = f"{FAIL2BAN_DIR}/jail.d/postwarden.local"
FILTER_DIR = f"{FAIL2BAN_DIR}/filter.d"

POSTFIX_LOG = "/var/log/postfix.log"
"""Postfix's ``maillog_file`` (see postfix.py)."""
DOVECOT_LOG = "/var/log/dovecot.log"
"""Dovecot's ``log_path``."""
POLICYD_LOG = "/var/log/postwarden/policyd.log"
"""Where postwarden-policyd logs its bans."""

AUTH_JAIL = "postwarden-auth"
HARVEST_JAIL = "postwarden-harvest"

BANACTION = "nftables-multiport"
BACKEND = "polling"

PORT_NAMES = {25: "smtp", 587: "submission", 465: "submissions", 143: "imap", 993: "imaps"}
"""Service names (/etc/services) for the standard ports; others are written as numbers."""
IMAP_PORTS = (143, 993)
"""Dovecot's IMAP listeners: the defaults, not host settings."""

# ----------------------------------------------------------------- filters
#
# fail2ban cuts the date from the start of the line ({^LN-BEG}) and matches the
# rest, so every regex starts with `^\s*` and then the fixed prefix the service
# writes: Postfix "HOST postfix/SERVICE/smtpd[PID]: ", Dovecot "imap-login: Info: ",
# policyd "postwarden-policyd[PID]: ". <ADDR> matches an IPv4 or IPv6 address only
# (never a host name, so no DNS). Postfix writes a client as "NAME[ADDR]" where NAME
# is "unknown" or a verified host name, which holds no brackets or spaces.

_POSTFIX_SMTPD = r"^\s*\S+ postfix(?:-[\w.-]+)?(?:/[\w.-]+)?/smtpd\[\d+\]: "
_POSTFIX_CLIENT = r"[^\s\[\]]+\[<ADDR>\](?::\d+)?"

POSTFIX_UNKNOWN_RECIPIENT = (
    _POSTFIX_SMTPD + r"(?:NOQUEUE|[0-9A-Za-z]+): reject: RCPT from " + _POSTFIX_CLIENT + r": "
    r"[45]50 [45]\.1\.1 <.*>: Recipient address rejected: "
    r"User unknown in (?:virtual mailbox|virtual alias|local recipient|relay recipient) table;"
)
"""Postfix: "NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 550 5.1.1 <nobody@example.com>:
Recipient address rejected: User unknown in virtual mailbox table; from=<...> to=<...>
proto=ESMTP helo=<...>"; the addresses and the HELO name come after the client's
address."""

POLICYD_BAN = (
    r"^\s*postwarden-policyd\[\d+\]: ban client=<ADDR> reason=invalid_recipients "
    r"count=\d+ within=\d+s for=\d+s$"
)
"""postwarden-policyd: "postwarden-policyd[4321]: ban client=192.0.2.9
reason=invalid_recipients count=10 within=600s for=3600s"."""

POLICYD_AUTH_BAN = (
    r"^\s*postwarden-policyd\[\d+\]: ban client=<ADDR> reason=auth_failures "
    r"count=\d+ within=\d+s for=\d+s$"
)
"""postwarden-policyd: "postwarden-policyd[4321]: ban client=192.0.2.7
reason=auth_failures count=5 within=600s for=3600s". The daemon writes the whole
line itself, from a client address Dovecot checked: nothing a client sends is in it."""

DATEPATTERN = "{^LN-BEG}"
"""The date starts the line: "Nov 30 12:00:00" (Postfix's maillog_file and Dovecot's
log_path) or ISO 8601 "2026-11-30T12:00:00+00:00" (policyd); fail2ban's own
templates read both."""


def _multiline(name: str, values: list[str]) -> str:
    """fail2ban continues a value on lines that start with whitespace."""
    return continued(values, " " * (len(name) + 3), f"fail2ban {name}")


@dataclass(frozen=True)
class Regex:
    comment: str
    pattern: str


@dataclass(frozen=True)
class Filter:
    name: str
    description: str
    failregex: list[Regex]
    datepattern: str = DATEPATTERN

    @property
    def failregex_value(self) -> str:
        return _multiline("failregex", [r.pattern for r in self.failregex])


AUTH_FILTER = Filter(
    AUTH_JAIL,
    "failed logins: postwarden-policyd's bans after wrong passwords (IMAP, POP3, SMTP AUTH)",
    [Regex(f"postwarden-policyd, {POLICYD_LOG}", POLICYD_AUTH_BAN)],
)

HARVEST_FILTER = Filter(
    HARVEST_JAIL,
    "unknown local recipients: Postfix's rejections and postwarden-policyd's bans",
    [
        Regex(f"Postfix, {POSTFIX_LOG}", POSTFIX_UNKNOWN_RECIPIENT),
        Regex(f"postwarden-policyd, {POLICYD_LOG}", POLICYD_BAN),
    ],
)


# -------------------------------------------------------------------- jails


@dataclass(frozen=True)
class Setting:
    name: str
    value: str


@dataclass(frozen=True)
class Jail:
    name: str
    comment: str
    settings: list[Setting]


def port_names(ports: list[int | None]) -> list[str]:
    names: list[str] = []
    for port in ports:
        if port is None:
            continue
        name = PORT_NAMES.get(port, str(port))
        if name not in names:
            names.append(name)
    return names


def login_ports(host: HostSettings) -> list[str]:
    """A client that guesses passwords loses SMTP and IMAP alike."""
    return port_names([*host.smtpd_ports, host.submission_port, host.submissions_port, *IMAP_PORTS])


def jail(
    name: str,
    comment: str,
    logpaths: list[str],
    ports: list[str],
    maxretry: int,
    rules: BadSmtpSessions,
) -> Jail:
    settings = [
        Setting("enabled", "true"),
        Setting("filter", name),
        Setting("backend", BACKEND),
        Setting("logpath", _multiline("logpath", logpaths)),
        # every jail names the IMAP ports at least (Dovecot's defaults)
        Setting("port", ",".join(ports)),
        Setting("protocol", "tcp"),
        Setting("maxretry", str(maxretry)),
        Setting("findtime", str(int(rules.within))),
        Setting("bantime", str(int(rules.ban_for))),
        Setting("usedns", "no"),
    ]
    return Jail(name, comment, settings)


def jails(policy: Policy, host: HostSettings) -> list[Jail]:
    rules = policy.abuse.bad_smtp_sessions
    if rules is None:
        return []
    found: list[Jail] = []
    if rules.auth_failures is not None:
        found.append(
            jail(
                AUTH_JAIL,
                f"{rules.auth_failures} failed logins within {rules.within} "
                f"(counted by postwarden-policyd): banned for {rules.ban_for}",
                [POLICYD_LOG],
                login_ports(host),
                # the daemon counted the failures: one ban line of its is the ban
                1,
                rules,
            )
        )
    if rules.invalid_recipients is not None:
        found.append(
            jail(
                HARVEST_JAIL,
                f"{rules.invalid_recipients} unknown recipients within {rules.within}: "
                f"banned for {rules.ban_for}",
                [POSTFIX_LOG, POLICYD_LOG],
                # a harvester is hostile: it loses IMAP too, also while policyd restarts
                login_ports(host),
                rules.invalid_recipients,
                rules,
            )
        )
    return found


DEFAULTS = [Setting("banaction", BANACTION)]

NO_JAILS = "abuse.bad_smtp_sessions is not set in the policy: no postwarden jails"


# ------------------------------------------------------------------- files


def render_fail2ban(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str
) -> list[RenderedFile]:
    return [
        RenderedFile(
            JAIL_FILE,
            render_template(
                "fail2ban/jail.local.j2",
                source,
                defaults=DEFAULTS,
                jails=jails(policy, host),
                no_jails=NO_JAILS,
            ),
            "fail2ban",
        ),
        *(
            RenderedFile(
                f"{FILTER_DIR}/{f.name}.conf",
                render_template("fail2ban/filter.conf.j2", source, filter=f),
                "fail2ban",
            )
            for f in (AUTH_FILTER, HARVEST_FILTER)
        ),
    ]
