"""`postwarden dns check` against a real authoritative server (NSD on loopback): a
domain whose DNS is right passes, and each planted defect is found, with the record
that fixes it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.deliverability.dns_check import dkim_record_text, dmarc_tags
from postwarden.deliverability.lookups import Lookups
from postwarden.deliverability.spf import evaluate, lookups_needed
from tests.throwaway_dns import Nsd

WritePolicy = Callable[..., Path]
runner = CliRunner()

# as long as a 2048-bit key's: its record is more than one TXT string
DEPLOYED_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "deployedkey" * 30 + "IDAQAB"
OTHER_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAanotherkeyIDAQAB"


def zone(origin: str, records: str) -> str:
    return (
        f"$ORIGIN {origin}.\n$TTL 60\n"
        f"@ IN SOA ns.{origin}. hostmaster.{origin}. 1 60 60 600 60\n"
        f"@ IN NS ns.{origin}.\nns IN A 127.0.0.1\n{records}"
    )


INCLUDES = "".join(f'i{n} IN TXT "v=spf1 ip4:192.0.2.{n} -all"\n' for n in range(11))
ZONES = {
    # right in every way
    "example.com": zone(
        "example.com",
        "@ IN MX 10 mail.example.com.\n"
        "mail IN A 203.0.113.10\n"
        "out IN A 203.0.113.10\n"
        "out IN A 203.0.113.11\n"
        '@ IN TXT "v=spf1 ip4:203.0.113.10 include:_spf.example.com -all"\n'
        '_spf IN TXT "v=spf1 ip4:203.0.113.11 ~all"\n'
        f's1._domainkey IN TXT "v=DKIM1; k=rsa; " "p={DEPLOYED_KEY[:200]}" '
        f'"{DEPLOYED_KEY[200:]}"\n'
        '_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:postmaster@example.com"\n',
    ),
    # no MX, SPF misses a pool address and names one that left, another DKIM key,
    # a DMARC record nobody can read
    "example.net": zone(
        "example.net",
        "out IN A 203.0.113.21\n"
        '@ IN TXT "v=spf1 ip4:198.51.100.9 -all"\n'
        '@ IN TXT "google-site-verification=abc"\n'
        f's1._domainkey IN TXT "v=DKIM1; k=rsa; p={OTHER_KEY}"\n'
        '_dmarc IN TXT "v=DMARC1; p=maybe"\n',
    ),
    # no SPF, no DMARC; MX elsewhere; no pools: the server's own address sends
    "example.org": zone("example.org", "@ IN MX 10 mx.elsewhere.test.\n"),
    # an SPF record that costs 11 lookups, and DMARC p=none
    "lookups.test": zone(
        "lookups.test",
        "@ IN MX 10 mail.example.com.\n"
        # one TXT of several strings (each at most 255 bytes), read as one record
        '@ IN TXT "v=spf1 ip4:203.0.113.10 ip4:203.0.113.11 " "'
        + " ".join(f"include:i{n}.lookups.test" for n in range(6))
        + ' " "'
        + " ".join(f"include:i{n}.lookups.test" for n in range(6, 11))
        + ' -all"\n'
        + INCLUDES
        + '_dmarc IN TXT "v=DMARC1; p=none"\n',
    ),
    # what a DNS server answers is text from outside: escape sequences, a table's bar
    "hostile.test": zone(
        "hostile.test",
        "@ IN MX 10 mail.example.com.\n"
        '@ IN TXT "v=spf1 ip4:192.0.2.1 \\027[2J|`x` -all"\n'
        '@ IN TXT "v=spf1 -all"\n',
    ),
    # records as they are found in the wild
    "quirks.test": zone(
        "quirks.test",
        "@ IN MX 10 mail.example.com.\n"
        # receivers ignore a redirect beside "all", and what follows "all"
        '@ IN TXT "v=spf1 ip4:203.0.113.10 ip4:203.0.113.11 -all redirect=nowhere.test " "'
        + " ".join(f"include:i{n}.lookups.test" for n in range(6))
        + ' " "'
        + " ".join(f"include:i{n}.lookups.test" for n in range(6, 11))
        + '"\n'
        '_dmarc IN TXT "v = DMARC1; p=Reject"\n'
        "plusall IN MX 10 mail.example.com.\n"
        'plusall IN TXT "v=spf1 +all"\n'
        "badcidr IN MX 10 mail.example.com.\n"
        'badcidr IN TXT "v=spf1 mx//abc -all"\n'
        "v6in4 IN MX 10 mail.example.com.\n"
        'v6in4 IN TXT "v=spf1 ip4:2001:db8::1 ip4:203.0.113.10 ip4:203.0.113.11 -all"\n'
        "nullmx IN MX 0 .\n",
    ),
    "113.0.203.in-addr.arpa": zone(
        "113.0.203.in-addr.arpa",
        "10 IN PTR out.example.com.\n11 IN PTR out.example.com.\n20 IN PTR wrong.example.net.\n",
    ),
    # the blocklist: .20 listed, .11 refused (Spamhaus's "you asked through a public resolver")
    "bl.test": zone(
        "bl.test",
        "20.113.0.203 IN A 127.0.0.2\n21.113.0.203 IN A 127.0.0.4\n"
        "11.113.0.203 IN A 127.255.255.254\n",
    ),
}

POLICY = """\
server: {hostname: mail.example.com, postmaster: postmaster@example.com}
domains:
  example.com: {dkim_selector: s1, ip_pool: main}
  example.net: {dkim_selector: s1, ip_pool: second}
  example.org: {}
  lookups.test: {ip_pool: main}
users:
  postmaster@example.com: {}
ip_pools:
  main:
    helo: out.example.com
    addresses: [{address: 203.0.113.10}, {address: 203.0.113.11}]
  second:
    helo: out.example.net
    addresses: [{address: 203.0.113.20}, {address: 203.0.113.21, state: quarantined}]
"""
KEPT = f"""s1._domainkey IN TXT ( "v=DKIM1; k=rsa; "
\t"p={DEPLOYED_KEY}" ) ;
"""


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nsd]:
    server = Nsd(tmp_path_factory.mktemp("nsd"), ZONES)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def checked(nsd: Nsd, write_policy: WritePolicy, tmp_path: Path) -> Callable[..., object]:
    policy = write_policy(POLICY)
    host = tmp_path / "host.yml"
    host.write_text("dnsbl_zones: [bl.test]\n")
    kept = tmp_path / "dkim"
    kept.mkdir()
    for domain in ("example.com", "example.net"):
        (kept / f"{domain}.s1.key.dns").write_text(KEPT)

    def run(*extra: str) -> object:
        return runner.invoke(
            app,
            [
                "dns",
                "check",
                str(policy),
                "--host-vars",
                str(host),
                "--nameserver",
                nsd.nameserver,
                "--dkim-records",
                str(kept),
                *extra,
            ],
        )

    return run


def findings(result: object) -> dict[tuple[str, str, str], list[dict[str, str]]]:
    by_key: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for found in json.loads(result.stdout):  # type: ignore[attr-defined]
        by_key.setdefault((found["severity"], found["check"], found["subject"]), []).append(found)
    return by_key


def test_the_right_domain_passes_and_every_planted_defect_is_found(
    checked: Callable[..., object],
) -> None:
    result = checked("--format", "json")
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    found = findings(result)
    good = {key for key in found if key[2] == "example.com"}
    assert good == {("ok", check, "example.com") for check in ("mx", "spf", "dkim", "dmarc")}
    problems = sorted(key for key in found if key[0] != "ok")
    assert problems == sorted(
        [
            ("error", "mx", "example.net"),
            ("error", "spf", "example.net"),  # gives fail for .20, then the fix
            ("warning", "spf", "example.net"),  # 198.51.100.9 left the policy
            ("error", "dkim", "example.net"),
            ("error", "dmarc", "example.net"),
            ("warning", "mx", "example.org"),
            ("error", "spf", "example.org"),
            ("warning", "dmarc", "example.org"),
            ("error", "spf", "lookups.test"),
            ("warning", "dmarc", "lookups.test"),
            ("error", "forward", "203.0.113.20"),
            ("error", "ptr", "203.0.113.20"),
            ("error", "blocklist", "203.0.113.20"),
            ("warning", "ptr", "203.0.113.21"),  # quarantined: to fix before it sends
            ("warning", "blocklist", "203.0.113.11"),
            ("warning", "blocklist", "203.0.113.21"),  # listed, but quarantined already
        ]
    )
    spf = found[("error", "spf", "example.net")]
    assert spf[0]["message"] == ("SPF gives fail for 203.0.113.20, which sends the domain's mail")
    # the quarantined address sends nothing: SPF need not name it
    assert spf[1]["message"] == "authorize 203.0.113.20"
    # first after v=spf1: no earlier "-" mechanism can match before it
    assert spf[1]["publish"] == (
        'example.net. 3600 IN TXT "v=spf1 ip4:203.0.113.20 ip4:198.51.100.9 -all"'
    )
    assert "198.51.100.9" in found[("warning", "spf", "example.net")][0]["message"]
    (mx,) = found[("error", "mx", "example.net")]
    assert mx["publish"] == "example.net. 3600 IN MX 10 mail.example.com."
    (dkim,) = found[("error", "dkim", "example.net")]
    assert "another key than the deployed one" in dkim["message"]
    record = f"v=DKIM1; k=rsa; p={DEPLOYED_KEY}"
    assert dkim["publish"] == (
        f's1._domainkey.example.net. 3600 IN TXT "{record[:255]}" "{record[255:]}"'
    )
    (no_spf,) = found[("error", "spf", "example.org")]
    assert no_spf["publish"] == ('example.org. 3600 IN TXT "v=spf1 a:mail.example.com -all"')
    (limit,) = found[("error", "spf", "lookups.test")]
    assert "more than 10 DNS lookups" in limit["message"]
    (ptr,) = found[("error", "ptr", "203.0.113.20")]
    assert ptr["publish"] == "20.113.0.203.in-addr.arpa. 3600 IN PTR out.example.net."
    (forward,) = found[("error", "forward", "203.0.113.20")]
    assert forward["publish"] == "out.example.net. 3600 IN A 203.0.113.20"
    (listed,) = found[("error", "blocklist", "203.0.113.20")]
    assert "listed on bl.test (127.0.0.2)" in listed["message"]
    (refused,) = found[("warning", "blocklist", "203.0.113.11")]
    assert "refused the query" in refused["message"]
    assert ("ok", "ptr", "203.0.113.11") in found
    assert ("ok", "forward", "203.0.113.11") in found


def test_text_and_markdown_say_the_same(checked: Callable[..., object]) -> None:
    text = checked()
    assert text.exit_code == 1  # type: ignore[attr-defined]
    lines = text.stdout.splitlines()  # type: ignore[attr-defined]
    assert "error   mx        example.net: no MX record" in lines[0] or any(
        line.startswith("error   mx        example.net: no MX record") for line in lines
    )
    assert any(
        line.strip() == "publish: example.net. 3600 IN MX 10 mail.example.com." for line in lines
    )
    assert lines[-1] == "DNS: 10 errors, 7 warnings, 11 checks passed."
    assert not any(line.startswith("ok") for line in lines)
    verbose = checked("--verbose")
    assert any(
        line.startswith("ok      spf       example.com: authorizes every sending address (2)")
        for line in verbose.stdout.splitlines()  # type: ignore[attr-defined]
    )
    markdown = checked("--format", "markdown")
    assert markdown.stdout.startswith("### postwarden dns check\n")  # type: ignore[attr-defined]
    assert "| error | mx | `example.net` | no MX record" in markdown.stdout  # type: ignore[attr-defined]


def test_a_server_that_does_not_answer_is_said_not_guessed(
    write_policy: WritePolicy, tmp_path: Path
) -> None:
    host = tmp_path / "host.yml"
    host.write_text("dnsbl_zones: []\n")
    result = runner.invoke(
        app,
        [
            "dns",
            "check",
            str(write_policy(POLICY)),
            "--host-vars",
            str(host),
            "--nameserver",
            "127.0.0.1:9",
            "--format",
            "json",
            "--timeout",
            "0.2",
        ],
    )
    assert result.exit_code == 1
    messages = {f["message"] for f in json.loads(result.stdout)}
    assert all(m.startswith("cannot check: ") for m in messages), messages


def test_spf_evaluation_follows_includes_and_counts_lookups(nsd: Nsd) -> None:
    lookups = Lookups(nsd.nameserver)
    assert evaluate("203.0.113.11", "example.com", lookups).result == "pass"
    assert evaluate("203.0.113.99", "example.com", lookups).result == "fail"
    assert lookups_needed("example.com", lookups)[0] == 1
    spent, walked = lookups_needed("lookups.test", lookups)
    assert (spent, walked.result) == (11, "permerror")
    # the first addresses of the record match before the limit is reached: a receiver
    # passes them, and fails the others; the preflight judges the whole record
    assert evaluate("203.0.113.10", "lookups.test", lookups).result == "pass"
    assert evaluate("192.0.2.10", "lookups.test", lookups).result == "permerror"


def test_record_parsers() -> None:
    assert dkim_record_text(KEPT) == f"v=DKIM1; k=rsa; p={DEPLOYED_KEY}"
    assert dkim_record_text("nothing here") is None
    assert dmarc_tags("v=DMARC1; p=reject; rua=mailto:a@example.com") == {
        "p": "reject",
        "rua": "mailto:a@example.com",
    }
    assert dmarc_tags("p=reject; v=DMARC1") is None
    assert dmarc_tags("v=DMARC1; p") is None


def test_what_a_dns_server_answers_is_shown_never_run(
    nsd: Nsd, write_policy: WritePolicy, tmp_path: Path
) -> None:
    policy = write_policy(
        "server: {hostname: mail.example.com, postmaster: postmaster@example.com}\n"
        "domains:\n  hostile.test: {}\n"
    )
    host = tmp_path / "host.yml"
    host.write_text("dnsbl_zones: []\n")
    base = ["dns", "check", str(policy), "--host-vars", str(host), "--nameserver", nsd.nameserver]
    text = runner.invoke(app, base)
    assert text.exit_code == 1
    assert "\x1b" not in text.stdout
    (kept,) = [line for line in text.stdout.splitlines() if "keep one" in line]
    assert "\\u001b[2J" in kept
    markdown = runner.invoke(app, [*base, "--format", "markdown"])
    (row,) = [line for line in markdown.stdout.splitlines() if "keep one" in line]
    assert "\x1b" not in row
    assert row.count(" | ") == 3, row  # the record's bar does not make a column
    assert "`x`" not in row


QUIRKS = """\
server: {hostname: mail.example.com, postmaster: postmaster@example.com}
domains:
  quirks.test: {ip_pool: main}
  plusall.quirks.test: {ip_pool: main}
  badcidr.quirks.test: {ip_pool: main}
  v6in4.quirks.test: {ip_pool: main}
  nullmx.quirks.test: {ip_pool: main}
ip_pools:
  main:
    helo: out.example.com
    addresses: [{address: 203.0.113.10}, {address: 203.0.113.11}]
"""


def test_records_as_found_in_the_wild(nsd: Nsd, write_policy: WritePolicy, tmp_path: Path) -> None:
    host = tmp_path / "host.yml"
    host.write_text("dnsbl_zones: []\n")
    result = runner.invoke(
        app,
        [
            "dns",
            "check",
            str(write_policy(QUIRKS)),
            "--host-vars",
            str(host),
            "--nameserver",
            nsd.nameserver,
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1, result.output
    found = findings(result)
    # "-all" ends the record: the redirect and the includes after it cost nothing
    assert ("ok", "spf", "quirks.test") in found
    assert ("ok", "dmarc", "quirks.test") in found  # spaces around "=", p=Reject
    (plus,) = found[("error", "spf", "plusall.quirks.test")]
    assert "+all" in plus["message"]
    (cidr,) = found[("error", "spf", "badcidr.quirks.test")]
    assert "not a prefix length" in cidr["message"]
    (mixed,) = found[("error", "spf", "v6in4.quirks.test")]
    assert "not a network" in mixed["message"]
    (null,) = found[("error", "mx", "nullmx.quirks.test")]
    assert "null MX" in null["message"]


def test_every_record_to_publish_is_a_valid_zone_line(
    checked: Callable[..., object], tmp_path: Path
) -> None:
    """What the preflight says to publish goes into zone files as it is: NSD's own
    checker reads every line (quotes escaped, long texts split in 255-byte strings)."""
    result = checked("--format", "json")
    records = [
        line
        for found in json.loads(result.stdout)  # type: ignore[attr-defined]
        for line in found["publish"].splitlines()
    ]
    assert any("_report._dmarc.example.com." in line for line in records)
    zone_file = tmp_path / "published.zone"
    zone_file.write_text(
        "$ORIGIN .\n$TTL 60\n"
        ". IN SOA ns.test. hostmaster.test. 1 60 60 600 60\n. IN NS ns.test.\n"
        + "\n".join(records)
        + "\n"
    )
    checked_zone = subprocess.run(
        ["nsd-checkzone", ".", str(zone_file)], capture_output=True, text=True, check=False
    )
    assert checked_zone.returncode == 0, checked_zone.stdout + checked_zone.stderr
    broken = zone_file.read_text().replace('\\"', '"', 1) + 'x. 60 IN TXT "a"b"\n'
    zone_file.write_text(broken)
    assert (
        subprocess.run(
            ["nsd-checkzone", ".", str(zone_file)], capture_output=True, check=False
        ).returncode
        != 0
    )


def test_a_nameserver_that_is_no_address_is_a_clear_error(
    write_policy: WritePolicy,
) -> None:
    result = runner.invoke(
        app, ["dns", "check", str(write_policy(POLICY)), "--nameserver", "dns.example:abc"]
    )
    assert result.exit_code == 1
    assert "is not ADDRESS or ADDRESS:PORT of a DNS server" in result.stderr
