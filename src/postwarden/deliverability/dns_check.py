"""The DNS preflight: does the DNS tell the same story as the policy?

Per domain: an MX, an SPF record that authorizes every address its mail leaves
from and stays within the lookup limit, the DKIM key that is deployed, a DMARC
record. Per outbound pool address: a PTR that names its HELO name, that name's
A/AAAA pointing back (forward-confirmed), and no listing on the configured
blocklists. Each finding says what to publish, as a zone-file line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import dns.reversename

from postwarden.deliverability.lookups import LookupFailed, Lookups
from postwarden.deliverability.spf import MAX_LOOKUPS, direct_networks, evaluate, lookups_needed
from postwarden.deliverability.spf import spf_records as spf_in
from postwarden.policy.models import Policy
from postwarden.policy.models.ip_pools import AddressState
from postwarden.policyd.dnsbl import REFUSED, query_name
from postwarden.visible import visible, visible_in_markdown

LISTING_CODES = ipaddress.ip_network("127.0.0.0/8")
"""Blocklists answer a listing from here; anything else is some resolver's doing."""

Severity = Literal["error", "warning", "ok"]
TTL = 3600


@dataclass(frozen=True)
class DnsFinding:
    severity: Severity
    check: str
    """mx, spf, dkim, dmarc, ptr, forward, blocklist."""
    subject: str
    """The domain or the outbound address it is about."""
    message: str
    publish: str = ""
    """The records to publish, as zone-file lines (one per line)."""


@dataclass(frozen=True)
class Sender:
    """An address mail leaves from, and why it must be authorized."""

    address: str
    pool: str
    state: AddressState
    helo: str


def leaves_from_the_host(policy: Policy, domain: str) -> bool:
    """Does some of the domain's mail leave from the host's own address (no pool)?
    Without a pool of the domain's, every user without a pool of their own sends so,
    as do the domain's addresses nobody declared (local applications)."""
    return policy.domains[domain].ip_pool is None


def senders_of(policy: Policy, domain: str) -> list[Sender]:
    """The pool addresses that carry the domain's mail now or may soon: the pools of
    the domain and of its users, and the pools they fail over to; active and
    draining addresses (a draining one still sends what is queued for it)."""
    names = {policy.domains[domain].ip_pool} | {
        user.ip_pool
        for address, user in policy.users.items()
        if address.rpartition("@")[2] == domain
    }
    pending = [n for n in names if n]
    seen: list[str] = []
    while pending:
        name = pending.pop()
        if name in seen or name not in policy.ip_pools:
            continue
        seen.append(name)
        failover = policy.ip_pools[name].failover
        if failover:
            pending.append(failover)
    found = []
    for name in sorted(seen):
        pool = policy.ip_pools[name]
        for member in pool.addresses:
            if member.state != "quarantined":
                found.append(Sender(member.address, name, member.state, member.helo or pool.helo))
    return found


def _mechanism(address: str) -> str:
    return f"ip{ipaddress.ip_address(address).version}:{address}"


TXT_STRING = 255
"""Bytes in one character-string of a TXT record; a longer text is several strings,
which receivers join."""


def _txt_line(name: str, text: str) -> str:
    """A zone-file line: quotes and backslashes escaped, split into strings of at
    most 255 bytes (a DKIM key of 2048 bits is longer)."""
    parts, part = [], ""
    for char in text:  # whole characters: a string never ends inside one
        if len((part + char).encode()) > TXT_STRING:
            parts.append(part)
            part = ""
        part += char
    parts.append(part)
    quoted = " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
    return f"{name}. {TTL} IN TXT {quoted}"


def check_mx(policy: Policy, domain: str, lookups: Lookups) -> Iterator[DnsFinding]:
    hostname = policy.server.hostname
    exchanges = [host for _, host in lookups.mx(domain)]
    if exchanges == [""]:
        yield DnsFinding(
            "error",
            "mx",
            domain,
            "a null MX (0 .): the domain says it takes no mail, yet the policy has it",
            f"{domain}. {TTL} IN MX 10 {hostname}.",
        )
        return
    if not exchanges:
        yield DnsFinding(
            "error",
            "mx",
            domain,
            "no MX record: mail for the domain goes to its A record, or bounces",
            f"{domain}. {TTL} IN MX 10 {hostname}.",
        )
    elif hostname not in exchanges:
        yield DnsFinding(
            "warning",
            "mx",
            domain,
            f"MX names {', '.join(exchanges)}, not this server ({hostname}): fine when "
            "other hosts of yours take the mail",
        )
    else:
        yield DnsFinding("ok", "mx", domain, f"MX names {', '.join(exchanges)}")


def check_spf(
    policy: Policy, domain: str, senders: list[Sender], lookups: Lookups
) -> Iterator[DnsFinding]:
    hostname = policy.server.hostname
    records = spf_in(lookups.txt(domain))
    required = [s.address for s in senders]
    wanted = " ".join(_mechanism(a) for a in required)
    if leaves_from_the_host(policy, domain):
        required += lookups.addresses(hostname)
        wanted = " ".join(filter(None, (wanted, f"a:{hostname}")))
    if not records:
        yield DnsFinding(
            "error",
            "spf",
            domain,
            "no SPF record: receivers cannot tell this server's mail from forgeries",
            _txt_line(domain, f"v=spf1 {wanted} -all"),
        )
        return
    if len(records) > 1:
        yield DnsFinding(
            "error",
            "spf",
            domain,
            f"{len(records)} SPF records: receivers refuse them all (permerror)",
            "keep one: " + _txt_line(domain, records[0]),
        )
        return
    (record,) = records
    if any(term.lower() in ("all", "+all") for term in record.split()[1:]):
        yield DnsFinding(
            "error",
            "spf",
            domain,
            "the SPF record ends in +all: it authorizes every address on the Internet",
            _txt_line(domain, f"v=spf1 {wanted} -all"),
        )
        return
    family = ipaddress.ip_address(required[0]).version if required else 4
    spent, walked = lookups_needed(domain, lookups, family)
    if walked.result == "permerror":
        yield DnsFinding(
            "error",
            "spf",
            domain,
            f"the SPF record is broken ({walked.reason}): receivers give permerror for "
            "any address it has not matched by then",
        )
        return
    if walked.result == "temperror":
        yield DnsFinding("error", "spf", domain, f"cannot read the SPF record: {walked.reason}")
        return
    missing = []
    for address in required:
        result = evaluate(address, domain, lookups)
        if result.result != "pass":
            missing.append(address)
            why = (
                f" (it uses {', '.join(result.undecided)}, which this check cannot decide)"
                if result.undecided
                else ""
            )
            yield DnsFinding(
                "error",
                "spf",
                domain,
                f"SPF gives {result.result} for {address}, which sends the domain's mail{why}",
            )
    if missing:
        terms = record.split()
        # first after "v=spf1": no earlier "-ip4:" or "-include:" can match before it
        fixed = [terms[0], *(_mechanism(a) for a in missing), *terms[1:]]
        yield DnsFinding(
            "error",
            "spf",
            domain,
            f"authorize {', '.join(missing)}",
            _txt_line(domain, " ".join(fixed)),
        )
    else:
        yield DnsFinding(
            "ok",
            "spf",
            domain,
            f"authorizes every sending address ({len(required)}), "
            f"{spent} of {MAX_LOOKUPS} DNS lookups",
        )
    if senders:
        sending = [ipaddress.ip_address(s.address) for s in senders]
        for network in direct_networks(record):
            if network.num_addresses == 1 and not any(ip in network for ip in sending):
                yield DnsFinding(
                    "warning",
                    "spf",
                    domain,
                    f"authorizes {network.network_address}, no address of the policy's "
                    "pools: one that left the policy? Take it out unless another "
                    "server of yours sends from it",
                )


DKIM_KEY = re.compile(r"(?:^|;)\s*p=([A-Za-z0-9+/=\s]*)")


def dkim_key(record: str) -> str | None:
    """The p= of a DKIM record, without spaces; None when there is none."""
    match = DKIM_KEY.search(record)
    return re.sub(r"\s+", "", match.group(1)) if match else None


def check_dkim(
    domain: str, selector: str, deployed: str | None, lookups: Lookups
) -> Iterator[DnsFinding]:
    name = f"{selector}._domainkey.{domain}"
    published = [t for t in lookups.txt(name) if dkim_key(t) is not None]
    publish = _txt_line(name, deployed) if deployed else ""
    if not published:
        yield DnsFinding(
            "error",
            "dkim",
            domain,
            f"no DKIM key at {name}: receivers cannot check the signatures",
            publish or f"the record rspamadm made for {name} (kept beside the key on the host)",
        )
        return
    if deployed is None:
        yield DnsFinding(
            "ok", "dkim", domain, f"a key is published at {name} (the deployed one was not given)"
        )
        return
    if any(dkim_key(t) == dkim_key(deployed) for t in published):
        if len(published) > 1:
            yield DnsFinding(
                "warning",
                "dkim",
                domain,
                f"{name} has {len(published)} DKIM records: which one a receiver uses is "
                "anybody's guess; keep the deployed one only",
                publish,
            )
            return
        yield DnsFinding("ok", "dkim", domain, f"{name} publishes the deployed key")
        return
    yield DnsFinding(
        "error",
        "dkim",
        domain,
        f"{name} publishes another key than the deployed one: every signature fails",
        publish,
    )


DMARC_POLICIES = ("none", "quarantine", "reject")


SHOWN_AT_MOST = 200
"""Characters of a record from DNS quoted in a finding."""


def _quoted(text: str) -> str:
    return repr(text if len(text) <= SHOWN_AT_MOST else text[:SHOWN_AT_MOST] + "...")


DMARC_VERSION = re.compile(r"v[ \t]*=[ \t]*DMARC1")
"""RFC 7489's dmarc-version: spaces around "=", "DMARC1" exactly."""


def dmarc_tags(record: str) -> dict[str, str] | None:
    """The tags of a DMARC record; None when it is not one receivers read."""
    parts = [p.strip() for p in record.split(";") if p.strip()]
    if not parts or not DMARC_VERSION.fullmatch(parts[0]):
        return None
    tags = {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if not equals:
            return None
        tags[name.strip().lower()] = value.strip()
    if "p" in tags:
        tags["p"] = tags["p"].lower()  # a literal, read without regard to case
    return tags


def check_dmarc(policy: Policy, domain: str, lookups: Lookups) -> Iterator[DnsFinding]:
    name = f"_dmarc.{domain}"
    records = [t for t in lookups.txt(name) if DMARC_VERSION.match(t)]
    reports_to = policy.server.postmaster
    advice = _txt_line(name, f"v=DMARC1; p=quarantine; rua=mailto:{reports_to}")
    report_domain = reports_to.rpartition("@")[2]
    if report_domain != domain:
        # RFC 7489 7.1: the reports' domain must say it takes reports about this one
        advice += "\n" + _txt_line(f"{domain}._report._dmarc.{report_domain}", "v=DMARC1")
    if not records:
        yield DnsFinding(
            "warning",
            "dmarc",
            domain,
            "no DMARC record: receivers apply their own guess to mail that fails SPF and DKIM",
            advice,
        )
        return
    if len(records) > 1:
        yield DnsFinding(
            "error", "dmarc", domain, f"{len(records)} DMARC records: receivers ignore them all"
        )
        return
    tags = dmarc_tags(records[0])
    if tags is None or tags.get("p") not in DMARC_POLICIES:
        yield DnsFinding(
            "error",
            "dmarc",
            domain,
            f"the DMARC record cannot be read: {_quoted(records[0])} (it needs v=DMARC1 "
            "first and p=none, quarantine or reject)",
            advice,
        )
        return
    if tags["p"] == "none":
        yield DnsFinding(
            "warning",
            "dmarc",
            domain,
            "DMARC says p=none: forgeries of the domain are delivered all the same",
            advice,
        )
        return
    yield DnsFinding("ok", "dmarc", domain, f"DMARC p={tags['p']}")


def check_address(
    address: str, helo: str, state: AddressState, lookups: Lookups
) -> Iterator[DnsFinding]:
    # a quarantined address sends nothing now: what it lacks must be fixed before it does
    severity: Severity = "warning" if state == "quarantined" else "error"
    reverse = dns.reversename.from_address(address).to_text().rstrip(".")
    names = lookups.ptr(address)
    if helo not in names:
        what = (
            f"PTR names {', '.join(names)}, not its HELO name {helo}"
            if names
            else f"no PTR record; it must name its HELO name {helo}"
        )
        yield DnsFinding(
            severity,
            "ptr",
            address,
            f"{what}: many receivers refuse such mail "
            "(the PTR is set by whoever holds the address block)",
            f"{reverse}. {TTL} IN PTR {helo}.",
        )
    else:
        yield DnsFinding("ok", "ptr", address, f"PTR names {helo}")
    forward = lookups.addresses(helo)
    if address not in forward:
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        yield DnsFinding(
            severity,
            "forward",
            address,
            f"{helo} does not point back at {address}: the PTR is not forward-confirmed",
            f"{helo}. {TTL} IN {kind} {address}",
        )
    else:
        yield DnsFinding("ok", "forward", address, f"{helo} points back at {address}")


def check_blocklists(
    address: str, state: AddressState, zones: list[str], lookups: Lookups
) -> Iterator[DnsFinding]:
    for zone in zones:
        try:
            answers = lookups.a(query_name(address, zone))
        except LookupFailed as error:
            yield DnsFinding("warning", "blocklist", address, f"cannot ask {zone}: {error}")
            continue
        codes = [ipaddress.ip_address(a) for a in answers]
        if not answers:
            yield DnsFinding("ok", "blocklist", address, f"not listed on {zone}")
        elif not all(code in LISTING_CODES for code in codes):
            yield DnsFinding(
                "warning",
                "blocklist",
                address,
                f"{zone} answered {', '.join(answers)}, which no blocklist lists with: "
                "a resolver that rewrites answers? Ask through another one",
            )
        elif all(code in REFUSED for code in codes):
            yield DnsFinding(
                "warning",
                "blocklist",
                address,
                f"{zone} refused the query: ask it through a resolver of your own",
            )
        elif state == "quarantined":
            yield DnsFinding(
                "warning",
                "blocklist",
                address,
                f"listed on {zone} ({', '.join(answers)}), and quarantined: ask the list to "
                "remove it before it sends again",
            )
        else:
            yield DnsFinding(
                "error",
                "blocklist",
                address,
                f"listed on {zone} ({', '.join(answers)}): receivers that use it refuse "
                "this address's mail; quarantine it (postwarden pool quarantine) and ask "
                "the list to remove it",
            )


def _guarded(check: str, subject: str, found: Iterator[DnsFinding]) -> list[DnsFinding]:
    """A lookup that fails, or a name in DNS that is none, makes the check say so
    (after what it found before), instead of ending the run."""
    kept: list[DnsFinding] = []
    try:
        for finding in found:
            kept.append(finding)
    except (LookupFailed, ValueError) as error:
        kept.append(DnsFinding("error", check, subject, f"cannot check: {error}"))
    return kept


def check_dns(
    policy: Policy,
    lookups: Lookups,
    blocklists: list[str],
    deployed_dkim: Mapping[tuple[str, str], str] | None = None,
) -> list[DnsFinding]:
    """Every check of the policy's domains and pool addresses. ``deployed_dkim``:
    (domain, selector) -> the DKIM record of the deployed key, where known."""
    deployed_dkim = deployed_dkim or {}
    findings: list[DnsFinding] = []
    for domain, settings in policy.domains.items():
        findings += _guarded("mx", domain, check_mx(policy, domain, lookups))
        senders = senders_of(policy, domain)
        findings += _guarded("spf", domain, check_spf(policy, domain, senders, lookups))
        if settings.dkim_selector:
            deployed = deployed_dkim.get((domain, settings.dkim_selector))
            findings += _guarded(
                "dkim", domain, check_dkim(domain, settings.dkim_selector, deployed, lookups)
            )
        findings += _guarded("dmarc", domain, check_dmarc(policy, domain, lookups))
    for pool in policy.ip_pools.values():
        for member in pool.addresses:
            helo = member.helo or pool.helo
            findings += _guarded(
                "ptr", member.address, check_address(member.address, helo, member.state, lookups)
            )
            findings += _guarded(
                "blocklist",
                member.address,
                check_blocklists(member.address, member.state, blocklists, lookups),
            )
    return findings


QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def dkim_record_text(kept: str) -> str | None:
    """The record text of a key's ``.dns`` file, as rspamadm dkim_keygen writes it
    (``s1._domainkey IN TXT ( "v=DKIM1; k=rsa; " "p=..." ) ;``): its quoted parts
    joined. None when it holds no DKIM key."""
    text = "".join(QUOTED.findall(kept))
    return text if dkim_key(text) else None


def format_text(findings: list[DnsFinding], verbose: bool) -> str:
    lines = []
    for finding in findings:
        if finding.severity == "ok" and not verbose:
            continue
        # a message and a record may quote what a DNS server answered: shown, never run
        lines.append(
            f"{finding.severity:<7} {finding.check:<9} {finding.subject}: "
            f"{visible(finding.message)}"
        )
        for number, record in enumerate(finding.publish.splitlines()):
            lines.append(f"{'':<17} {'publish:' if number == 0 else '':<8} {visible(record)}")
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = sum(1 for f in findings if f.severity == "warning")
    passed = sum(1 for f in findings if f.severity == "ok")
    lines.append(f"DNS: {errors} errors, {warnings} warnings, {passed} checks passed.")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for a markdown table cell: one line, nothing markdown would read."""
    return visible_in_markdown(text)


def format_markdown(findings: list[DnsFinding]) -> str:
    lines = ["### postwarden dns check", "", "| | check | subject | finding |", "|---|---|---|---|"]
    for finding in findings:
        if finding.severity == "ok":
            continue
        message = _cell(finding.message)
        if finding.publish:
            # in code spans: no HTML is read, and no backtick may end one early
            records = [
                "`" + visible(record).replace("|", "\\|").replace("`", "'") + "`"
                for record in finding.publish.splitlines()
            ]
            message += "<br>publish: " + "<br>".join(records)
        lines.append(f"| {finding.severity} | {finding.check} | `{finding.subject}` | {message} |")
    passed = sum(1 for f in findings if f.severity == "ok")
    lines += ["", f"{passed} checks passed."]
    return "\n".join(lines) + "\n"
