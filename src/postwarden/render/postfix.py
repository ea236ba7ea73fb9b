"""Postfix: main.cf, master.cf and the lookup tables that carry the policy.

What the configuration enforces, and where:

- port 25 takes mail for the local domains only (``reject_unauth_destination``),
  refuses unauthenticated mail claiming a local sender domain, and rejects unknown
  recipients after the policy daemon has counted them;
- ports 587 and 465 require TLS and a login, and the envelope sender must belong
  to the login (own address, aliases, ``send_as`` grants) per ``sender_login``;
- the policy daemon is asked at RCPT and at END-OF-DATA on every smtpd; rspamd is
  the milter for all of them;
- each outbound address of an IP pool is an smtp transport of its own (bind
  address and HELO); senders reach theirs through ``sender_transport``;
- a list address expands through a local alias whose ``owner-`` alias becomes
  the envelope sender, so list mail leaves through the pool's low-priority
  transport.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from postwarden.policy.models import Policy
from postwarden.policy.models.ip_pools import IpPool
from postwarden.policy.secrets import Secrets
from postwarden.render import guard
from postwarden.render.host import HostSettings
from postwarden.render.templating import header, render_template
from postwarden.render.tree import RenderedFile

POSTFIX_DIR = "/etc/postfix"
MAPS_DIR = "/etc/postfix/postwarden"
TABLE = "hash"
LIST_PREFIX = "pwlist-"
LIST_DOMAIN = "localhost"
DOVECOT_AUTH = "private/auth"
DOVECOT_LMTP = "private/dovecot-lmtp"
LIST_CONCURRENCY = 2
LIST_RATE_DELAY = "1s"
DEFAULT_TLS_DIR = "/etc/ssl/postwarden"


@dataclass(frozen=True)
class Transport:
    """One outbound address as a Postfix smtp transport."""

    name: str
    address: str
    helo: str
    state: str

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.address).version == 6


def transport_name(pool: str, address: str) -> str:
    return f"pw_{pool}_{address}".replace("-", "_").replace(".", "_").replace(":", "_")


def list_transport_name(pool: str) -> str:
    return f"pw_lists_{pool}".replace("-", "_")


def pool_transports(pool_name: str, pool: IpPool) -> list[Transport]:
    return [
        Transport(transport_name(pool_name, a.address), a.address, a.helo or pool.helo, a.state)
        for a in pool.addresses
    ]


def active_transports(
    policy: Policy, pool_name: str, states: Mapping[str, str] | None = None
) -> list[Transport]:
    """The transports that take new mail for a pool: its active addresses, or its
    failover's. ``states`` overrides the policy's state of an address at run time."""
    states = states or {}
    seen: set[str] = set()
    current: str | None = pool_name
    while current is not None and current not in seen and current in policy.ip_pools:
        seen.add(current)
        pool = policy.ip_pools[current]
        active = [
            t for t in pool_transports(current, pool) if states.get(t.address, t.state) == "active"
        ]
        if active:
            return active
        current = pool.failover
    return []


def pick(transports: list[Transport], key: str) -> Transport:
    """Spread senders over a pool's active addresses, the same way on every run."""
    digest = hashlib.sha256(key.encode()).digest()
    return transports[int.from_bytes(digest[:4], "big") % len(transports)]


def list_alias(address: str) -> str:
    """The local alias a list address expands through: all-staff@example.com ->
    pwlist-all-staff=example.com. One alias per address: a domain holds no '=', so
    the last '=' always splits it back."""
    local, _, domain = address.rpartition("@")
    return f"{LIST_PREFIX}{local}={domain}"


# -------------------------------------------------------------------- tables


def table_lines(entries: Iterable[tuple[str, str]], where: str = "a lookup table") -> str:
    return guard.table(entries, where)


def virtual_domains(policy: Policy) -> list[tuple[str, str]]:
    return [(domain, "OK") for domain in sorted(policy.domains)]


def virtual_mailboxes(policy: Policy) -> list[tuple[str, str]]:
    entries = []
    for address in sorted(policy.users):
        local, _, domain = address.partition("@")
        entries.append((address, f"{domain}/{local}/"))
    return entries


def virtual_aliases(policy: Policy) -> list[tuple[str, str]]:
    entries: dict[str, str] = {}
    for address, user in policy.users.items():
        for alias in user.aliases:
            entries[alias] = address
    for address in policy.lists:
        entries[address] = f"{list_alias(address)}@{LIST_DOMAIN}"
    catch_all_domains = {d for d, domain in policy.domains.items() if domain.catch_all}
    for domain_name in sorted(catch_all_domains):
        target = policy.domains[domain_name].catch_all
        assert target is not None
        entries[f"@{domain_name}"] = target
        # a catch-all would swallow real mailboxes too, unless they map to themselves
        for address in policy.users:
            if address.endswith(f"@{domain_name}") and address not in entries:
                entries[address] = address
    return sorted(entries.items())


def sender_logins(policy: Policy) -> list[tuple[str, str]]:
    """Who may use which envelope sender: the user, their aliases, their grants."""
    owners: dict[str, list[str]] = {}
    for address, user in policy.users.items():
        for sender in (address, *user.aliases, *user.send_as):
            owners.setdefault(sender, [])
            if address not in owners[sender]:
                owners[sender].append(address)
    return [(sender, ",".join(sorted(logins))) for sender, logins in sorted(owners.items())]


def helo_access(policy: Policy, hostname: str) -> list[tuple[str, str]]:
    """Names no other server may introduce itself with: this host's own, and localhost."""
    message = "REJECT 5.7.1 that is not your name: introduce yourself by your own name"
    names = dict.fromkeys([hostname, policy.server.hostname, "localhost", "localhost.localdomain"])
    return [(name, message) for name in names]


def submission_senders() -> list[tuple[str, str]]:
    """The null sender on the submission ports: bounces come from servers, not logins."""
    return [
        (
            "<>",
            "REJECT 5.7.1 a logged-in client sends with its own address as the sender, "
            "never the null sender",
        )
    ]


def local_sender_domains(policy: Policy) -> list[tuple[str, str]]:
    message = "REJECT 5.7.1 sender address in a local domain: log in and send on port 587 or 465"
    return [(domain, message) for domain in sorted(policy.domains)]


def sender_transports(policy: Policy, hostname: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for domain_name in sorted(policy.domains):
        pool = policy.domains[domain_name].ip_pool
        active = active_transports(policy, pool) if pool else []
        if active:
            entries.append((f"@{domain_name}", pick(active, domain_name).name))
    for address in sorted(policy.users):
        user = policy.users[address]
        if user.ip_pool:
            active = active_transports(policy, user.ip_pool)
            if active:
                entries.append((address, pick(active, address).name))
    for address in sorted(policy.lists):
        pool = list_pool(policy, address)
        active = active_transports(policy, pool) if pool else []
        if pool is not None and active:
            owner = f"owner-{list_alias(address)}@{hostname}"
            low = policy.lists[address].priority == "low"
            entries.append((owner, list_transport_name(pool) if low else pick(active, owner).name))
    return entries


def list_pool(policy: Policy, address: str) -> str | None:
    return policy.domains[address.rpartition("@")[2]].ip_pool


def low_priority_pools(policy: Policy) -> list[str]:
    """Pools with a low-priority list that can send: each gets a list transport."""
    return sorted(
        {
            pool
            for address, mailing_list in policy.lists.items()
            if mailing_list.priority == "low"
            and (pool := list_pool(policy, address)) is not None
            and active_transports(policy, pool)
        }
    )


def list_aliases(policy: Policy) -> list[tuple[str, list[str]]]:
    """Local aliases: list expansion with owner- aliases, and the system's own names."""
    postmaster = policy.server.postmaster
    entries = [
        ("postmaster", [postmaster]),
        ("root", [postmaster]),
        ("mailer-daemon", [postmaster]),
        ("abuse", [postmaster]),
    ]
    for address in sorted(policy.lists):
        mailing_list = policy.lists[address]
        alias = list_alias(address)
        entries.append((alias, list(mailing_list.members)))
        entries.append((f"owner-{alias}", list(mailing_list.moderators or [postmaster])))
    return entries


def alias_lines(entries: Iterable[tuple[str, list[str]]]) -> str:
    return "".join(guard.alias_line(name, targets, "aliases") for name, targets in entries)


def internal_recipients() -> str:
    return (
        f"/^(owner-)?{LIST_PREFIX}.*@/\t"
        "REJECT 5.1.1 list delivery addresses are internal: write to the list's own address\n"
    )


# ---------------------------------------------------------------- main.cf


_PARAMETER_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Setting:
    name: str
    value: str

    def __post_init__(self) -> None:
        if not _PARAMETER_NAME.fullmatch(self.name):
            raise guard.UnsafeValue("main.cf", f"would set a parameter named {self.name!r}")
        guard.one_line(self.value, f"main.cf {self.name}")


@dataclass(frozen=True)
class Section:
    title: str
    settings: list[Setting]


def _settings(*pairs: tuple[str, str | int]) -> list[Setting]:
    return [Setting(name, str(value)) for name, value in pairs]


def _map(name: str) -> str:
    return f"{TABLE}:{MAPS_DIR}/{name}"


def tls_paths(policy: Policy, hostname: str) -> tuple[str, str]:
    if policy.server.tls is not None:
        return policy.server.tls.cert, policy.server.tls.key
    return f"{DEFAULT_TLS_DIR}/{hostname}.crt", f"{DEFAULT_TLS_DIR}/{hostname}.key"


def policy_service(host: HostSettings) -> str:
    return f"check_policy_service inet:{host.policyd_listen}"


def main_cf_sections(policy: Policy, host: HostSettings) -> list[Section]:
    hostname = host.name or policy.server.hostname
    cert, key = tls_paths(policy, hostname)
    ask_policyd = policy_service(host)
    transports = [t for name, pool in policy.ip_pools.items() for t in pool_transports(name, pool)]
    list_pools = low_priority_pools(policy)

    sections = [
        Section(
            "identity",
            _settings(
                ("compatibility_level", "3.6"),
                ("myhostname", hostname),
                ("myorigin", "$myhostname"),
                ("mydestination", f"$myhostname, {LIST_DOMAIN}"),
                ("mynetworks", " ".join(host.mynetworks)),
                ("inet_interfaces", "all"),
                ("inet_protocols", "all"),
                ("smtpd_banner", "$myhostname ESMTP"),
                ("biff", "no"),
                ("append_dot_mydomain", "no"),
                ("readme_directory", "no"),
                ("recipient_delimiter", "+"),
                ("maillog_file", "/var/log/postfix.log"),
                ("message_size_limit", int(policy.server.message_size_limit)),
                ("mailbox_size_limit", 0),
                ("relayhost", host.relayhost or ""),
            ),
        ),
        Section(
            "TLS: opportunistic on port 25 (from server.port25_min_tls up), required for "
            "logins (TLSv1.2 up, never an anonymous cipher)",
            _settings(
                ("smtpd_tls_cert_file", cert),
                ("smtpd_tls_key_file", key),
                ("smtpd_tls_security_level", "may"),
                ("smtpd_tls_auth_only", "yes"),
                ("smtpd_tls_protocols", f">={policy.server.port25_min_tls}"),
                ("smtpd_tls_mandatory_protocols", ">=TLSv1.2"),
                ("pw_submission_tls_exclude_ciphers", "aNULL, eNULL"),
                ("smtpd_tls_loglevel", 1),
                ("smtp_tls_security_level", "may"),
                ("smtp_tls_loglevel", 1),
                ("tls_ssl_options", "NO_COMPRESSION, NO_RENEGOTIATION"),
            ),
        ),
        Section(
            "logins are checked by Dovecot; only the submission ports offer them",
            _settings(
                ("smtpd_sasl_type", "dovecot"),
                ("smtpd_sasl_path", DOVECOT_AUTH),
                ("smtpd_sasl_auth_enable", "no"),
                ("smtpd_sasl_security_options", "noanonymous"),
                ("smtpd_sasl_authenticated_header", "no"),
                ("smtpd_sender_login_maps", _map("sender_login")),
            ),
        ),
        Section(
            "mailboxes, aliases and lists",
            _settings(
                ("virtual_mailbox_domains", _map("virtual_domains")),
                ("virtual_mailbox_maps", _map("virtual_mailboxes")),
                ("virtual_alias_maps", _map("virtual_aliases")),
                ("virtual_transport", f"lmtp:unix:{DOVECOT_LMTP}"),
                ("alias_maps", _map("aliases")),
                ("alias_database", _map("aliases")),
                ("owner_request_special", "yes"),
                ("expand_owner_alias", "no"),
            ),
        ),
        Section(
            "what every SMTP session must get right",
            _settings(
                ("smtpd_helo_required", "yes"),
                # a client may not name this host, localhost or a name that is no name
                (
                    "smtpd_helo_restrictions",
                    "permit_mynetworks, permit_sasl_authenticated, "
                    "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname, "
                    f"check_helo_access {_map('helo_access')}",
                ),
                ("disable_vrfy_command", "yes"),
                # ETRN would let anyone make this host flush its queue
                ("smtpd_etrn_restrictions", "reject"),
                ("smtpd_discard_ehlo_keywords", "etrn, silent-discard"),
                ("strict_rfc821_envelopes", "yes"),
                ("smtpd_reject_unlisted_recipient", "yes"),
                ("smtpd_policy_service_timeout", "10s"),
                ("smtpd_policy_service_try_limit", 2),
            ),
        ),
        Section(
            "SMTP smuggling: only <CR><LF>.<CR><LF> ends a message, a bare <LF> is read as "
            "<CR><LF>, and a client that sends before the server answered is refused",
            _settings(
                ("smtpd_forbid_bare_newline", "normalize"),
                ("smtpd_forbid_bare_newline_exclusions", "$mynetworks"),
                ("smtpd_forbid_unauth_pipelining", "yes"),
                ("smtpd_data_restrictions", "reject_unauth_pipelining"),
            ),
        ),
        Section(
            "port 25: mail for local domains from anywhere, never relayed",
            _settings(
                ("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination"),
                (
                    "smtpd_sender_restrictions",
                    "permit_mynetworks, reject_non_fqdn_sender, "
                    f"check_sender_access {_map('local_sender_domains')}",
                ),
                (
                    "smtpd_recipient_restrictions",
                    "reject_non_fqdn_recipient, reject_unauth_pipelining, "
                    f"check_recipient_access regexp:{MAPS_DIR}/internal_recipients, "
                    f"{ask_policyd}, reject_unlisted_recipient",
                ),
                ("smtpd_end_of_data_restrictions", ask_policyd),
            ),
        ),
        Section(
            "ports 587 and 465: logged-in users, sending as themselves",
            _settings(
                ("pw_submission_client_restrictions", "permit_sasl_authenticated, reject"),
                # a login sends as itself: not as someone else, not as the null sender
                (
                    "pw_submission_sender_restrictions",
                    f"check_sender_access {_map('submission_senders')}, "
                    "reject_non_fqdn_sender, reject_authenticated_sender_login_mismatch",
                ),
                ("pw_submission_relay_restrictions", "permit_sasl_authenticated, reject"),
                (
                    "pw_submission_recipient_restrictions",
                    # a login may not write to a list's expansion address either: only
                    # the list itself does, after its posting rule and throttle
                    "reject_non_fqdn_recipient, "
                    f"check_recipient_access regexp:{MAPS_DIR}/internal_recipients, "
                    f"{ask_policyd}, permit_sasl_authenticated, reject",
                ),
            ),
        ),
        Section(
            "rspamd checks mail in and out",
            _settings(
                ("smtpd_milters", host.rspamd_milter),
                ("non_smtpd_milters", ""),
                ("milter_protocol", 6),
                ("milter_default_action", "tempfail"),
                (
                    "milter_mail_macros",
                    "i {mail_addr} {client_addr} {client_name} {auth_authen}",
                ),
            ),
        ),
        Section(
            "outbound IP pools",
            _settings(
                (
                    "sender_dependent_default_transport_maps",
                    f"socketmap:inet:{host.policyd_socketmap_listen}:transport"
                    if host.runtime_pools
                    else _map("sender_transport"),
                ),
                *(
                    (f"{list_transport_name(p)}_{param}", value)
                    for p in list_pools
                    for param, value in (
                        ("destination_concurrency_limit", LIST_CONCURRENCY),
                        ("initial_destination_concurrency", 1),
                        ("destination_rate_delay", LIST_RATE_DELAY),
                    )
                ),
            ),
        ),
    ]
    if not transports:
        sections[-1] = Section("outbound IP pools: none declared", [])
    return sections


# -------------------------------------------------------------- master.cf


@dataclass(frozen=True)
class Service:
    name: str
    kind: str
    private: str
    unprivileged: str
    chroot: str
    wakeup: str
    limit: str
    command: str
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"master.cf {self.name}"
        guard.words(
            (self.name, self.kind, self.private, self.unprivileged, self.chroot),
            where,
        )
        guard.words((self.wakeup, self.limit, self.command), where)
        for option in self.options:
            guard.field(option, where)
            if "=" not in option:
                raise guard.UnsafeValue(where, "has an option without name=value")


_BASE_SERVICES = [
    Service("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    Service("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    Service("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    Service("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    Service("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    Service("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    Service("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    Service("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    Service("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    Service("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    Service("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    Service("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    Service("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    Service(
        "relay", "unix", "-", "-", "n", "-", "-", "smtp", ("syslog_name=postfix/$service_name",)
    ),
    Service("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    Service("error", "unix", "-", "-", "n", "-", "-", "error"),
    Service("retry", "unix", "-", "-", "n", "-", "-", "error"),
    Service("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    Service("local", "unix", "-", "n", "n", "-", "-", "local"),
    Service("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
    Service("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
    Service("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    Service("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    Service("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
]

_SUBMISSION_OPTIONS = (
    "smtpd_tls_security_level=encrypt",
    "smtpd_tls_exclude_ciphers=$pw_submission_tls_exclude_ciphers",
    "smtpd_tls_mandatory_exclude_ciphers=$pw_submission_tls_exclude_ciphers",
    "smtpd_sasl_auth_enable=yes",
    "smtpd_client_restrictions=$pw_submission_client_restrictions",
    "smtpd_sender_restrictions=$pw_submission_sender_restrictions",
    "smtpd_relay_restrictions=$pw_submission_relay_restrictions",
    "smtpd_recipient_restrictions=$pw_submission_recipient_restrictions",
    "milter_macro_daemon_name=ORIGINATING",
)


def _smtpd(name: str, options: tuple[str, ...] = ()) -> Service:
    return Service(name, "inet", "n", "-", "n", "-", "-", "smtpd", options)


def _smtp(name: str, transport: Transport) -> Service:
    """An smtp client bound to one outbound address, introducing itself by its HELO."""
    bind = "smtp_bind_address6" if transport.ipv6 else "smtp_bind_address"
    return Service(
        name,
        "unix",
        "-",
        "-",
        "n",
        "-",
        "-",
        "smtp",
        (
            f"{bind}={transport.address}",
            f"smtp_helo_name={transport.helo}",
            f"syslog_name=postfix/{name}",
        ),
    )


def master_services(policy: Policy, host: HostSettings) -> list[Service]:
    services = [_smtpd(str(port) if port != 25 else "smtp") for port in host.smtpd_ports]
    if host.submission_port is not None:
        name = "submission" if host.submission_port == 587 else str(host.submission_port)
        services.append(
            _smtpd(
                name,
                ("syslog_name=postfix/submission", *_SUBMISSION_OPTIONS),
            )
        )
    if host.submissions_port is not None:
        name = "submissions" if host.submissions_port == 465 else str(host.submissions_port)
        services.append(
            _smtpd(
                name,
                (
                    "syslog_name=postfix/submissions",
                    "smtpd_tls_wrappermode=yes",
                    *_SUBMISSION_OPTIONS,
                ),
            )
        )
    services += _BASE_SERVICES
    for pool_name in sorted(policy.ip_pools):
        for transport in pool_transports(pool_name, policy.ip_pools[pool_name]):
            services.append(_smtp(transport.name, transport))
    for pool_name in low_priority_pools(policy):
        # low_priority_pools only names pools that have an active address
        first = active_transports(policy, pool_name)[0]
        services.append(_smtp(list_transport_name(pool_name), first))
    return services


# ------------------------------------------------------------------ files


def render_postfix(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str
) -> list[RenderedFile]:
    hostname = host.name or policy.server.hostname

    def table(name: str, entries: list[tuple[str, str]]) -> RenderedFile:
        return RenderedFile(
            f"{MAPS_DIR}/{name}",
            header(source) + table_lines(entries, name),
            "postfix",
            postmap="postmap",
        )

    return [
        RenderedFile(
            f"{POSTFIX_DIR}/main.cf",
            render_template("postfix/main.cf.j2", source, sections=main_cf_sections(policy, host)),
            "postfix",
        ),
        RenderedFile(
            f"{POSTFIX_DIR}/master.cf",
            render_template("postfix/master.cf.j2", source, services=master_services(policy, host)),
            "postfix",
        ),
        table("virtual_domains", virtual_domains(policy)),
        table("virtual_mailboxes", virtual_mailboxes(policy)),
        table("virtual_aliases", virtual_aliases(policy)),
        table("sender_login", sender_logins(policy)),
        table("local_sender_domains", local_sender_domains(policy)),
        table("helo_access", helo_access(policy, hostname)),
        table("submission_senders", submission_senders()),
        table("sender_transport", sender_transports(policy, hostname)),
        RenderedFile(
            f"{MAPS_DIR}/aliases",
            header(source) + alias_lines(list_aliases(policy)),
            "postfix",
            postmap="postalias",
        ),
        RenderedFile(
            f"{MAPS_DIR}/internal_recipients", header(source) + internal_recipients(), "postfix"
        ),
    ]
