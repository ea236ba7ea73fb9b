"""Postfix: the rendered main.cf, master.cf and lookup tables, checked with Postfix's
own offline tools on a copy in tmp_path, then read for what they enforce.

The validators, and what they are known to do (Postfix 3.7):

- ``postconf -c DIR -n`` exits 0 even for a misspelled parameter, which it only
  reports as ``warning: ... unused parameter``: a warning is a failure here;
- ``postconf -c DIR -M`` exits 1 on a master.cf it cannot parse;
- ``postfix -c DIR check`` (DIR must be absolute: a relative one fails silently);
- ``postmap``/``postalias`` exit 0 for malformed lines and duplicate keys too,
  with a warning; they exit 1 only for what they cannot open.

postconf needs dynamicmaps.cf (and its .d directory) in DIR: they come from the
host's /etc/postfix, which is only read. The copy's main.cf logs to standard error
and has a queue of its own (see ``scaffolding_for``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.policyd.pools import PoolRuntime
from postwarden.render.host import HostSettings
from postwarden.render.policyd import policyd_settings
from postwarden.render.postfix import (
    MAPS_DIR,
    list_alias,
    list_transport_name,
    render_postfix,
    transport_name,
)
from postwarden.render.tree import RenderedFile
from tests.render.conftest import SOURCE, write_files

POSTFIX_ETC = Path("/etc/postfix")
POLICY_SERVICE = "check_policy_service inet:127.0.0.1:10040"
LOCAL_SENDER_REJECT = (
    "REJECT 5.7.1 sender address in a local domain: log in and send on port 587 or 465"
)
SUBMISSION_RESTRICTIONS = {
    f"smtpd_{stage}_restrictions": f"$pw_submission_{stage}_restrictions"
    for stage in ("client", "sender", "relay", "recipient")
}

WritePolicy = Callable[..., Path]

# A pool whose addresses are all quarantined, carried by its failover; a list in its domain.
FAILOVER_POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.com
domains:
  example.com:
    ip_pool: primary
users:
  ops@example.com: {}
  carol@example.com:
    ip_pool: primary
lists:
  team@example.com:
    members: [ops@example.com, carol@example.com]
    priority: low
ip_pools:
  primary:
    helo: out.example.com
    addresses:
      - address: 203.0.113.40
        state: quarantined
      - address: 203.0.113.41
        state: quarantined
    failover: backup
  backup:
    helo: backup.example.com
    addresses:
      - address: 203.0.113.50
"""


DRAINING_POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.com
domains:
  example.com:
    ip_pool: main
ip_pools:
  main:
    helo: out.example.com
    addresses:
      - address: 203.0.113.60
        state: draining
      - address: 203.0.113.61
users:
"""


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    for tool in ("postconf", "postfix", "postmap", "postalias"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/setup --test"


# ------------------------------------------------------------------ helpers


def render(loaded: LoadedPolicy, host: HostSettings | None = None) -> list[RenderedFile]:
    return render_postfix(loaded.policy, loaded.secrets, host or HostSettings(), SOURCE)


def by_path(files: list[RenderedFile]) -> dict[str, str]:
    return {f.path: f.content for f in files}


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
    )


def complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """A Postfix tool's failure: a non-zero exit, or any warning or fatal line."""
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "warning:" in line or "fatal:" in line
    ]
    return ([f"exit status {result.returncode}"] if result.returncode else []) + lines


def scaffolding_for(root: Path) -> dict[str, str]:
    """Settings of the test copy that keep the Postfix tools off the host's running
    Postfix: its log (through postlogd), its queue (`postfix check` runs postsuper
    there) and its data directory."""
    return {
        "maillog_file": "",
        "queue_directory": str(root / "var" / "spool" / "postfix"),
        "data_directory": str(root / "var" / "lib" / "postfix"),
    }


@dataclass(frozen=True)
class Copy:
    """A rendered tree in tmp_path: ``config`` is its etc/postfix."""

    root: Path
    config: Path

    def table(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")


def postfix_copy(files: list[RenderedFile], root: Path) -> Copy:
    write_files(files, root)
    config = root / "etc" / "postfix"
    shutil.copy(POSTFIX_ETC / "dynamicmaps.cf", config)
    shutil.copytree(POSTFIX_ETC / "dynamicmaps.cf.d", config / "dynamicmaps.cf.d")
    scaffolding = scaffolding_for(root)
    main_cf = config / "main.cf"
    text = main_cf.read_text()
    assert text.count("\nmaillog_file = ") == 1
    text = re.sub(r"(?m)^maillog_file = .*$", "maillog_file =", text)
    main_cf.write_text(text + "".join(f"{k} = {v}\n" for k, v in scaffolding.items() if v))
    for name in ("queue_directory", "data_directory"):
        Path(scaffolding[name]).mkdir(parents=True)
    for path in config.rglob("*"):
        settle(path)
    return Copy(root, config)


def settle(path: Path) -> None:
    """Postfix waits (up to 2s) for a file written in the current second to settle."""
    past = time.time() - 60
    os.utime(path, (past, past))


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    settle(path)


def postconf_n(config: Path) -> subprocess.CompletedProcess[str]:
    return run("postconf", "-c", config, "-n")


def postconf_m(config: Path) -> subprocess.CompletedProcess[str]:
    return run("postconf", "-c", config, "-M")


def postfix_check(config: Path) -> subprocess.CompletedProcess[str]:
    return run("postfix", "-c", config, "check")


def compile_table(copy: Copy, rendered: RenderedFile) -> subprocess.CompletedProcess[str]:
    assert rendered.postmap is not None
    return run(rendered.postmap, "-c", copy.config, f"hash:{copy.table(rendered.path)}")


def lookup(copy: Copy, table: str, key: str, command: str = "postmap") -> str | None:
    """What the compiled table answers for key, or None when the key is not there."""
    result = run(command, "-c", copy.config, "-q", key, f"hash:{copy.table(table)}")
    assert result.returncode in (0, 1), result.stderr
    assert complaints(result) in ([], ["exit status 1"]), result.stderr
    return result.stdout.rstrip("\n") if result.returncode == 0 else None


def parse_main_cf(text: str) -> dict[str, str]:
    """main.cf as name -> value (the renderer writes one line per setting)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        assert not line[0].isspace(), f"continuation lines are not rendered: {line!r}"
        name, sep, value = line.partition("=")
        assert sep, line
        name = name.strip()
        assert name not in settings, f"{name} is set twice"
        settings[name] = value.strip()
    return settings


@dataclass
class Service:
    name: str
    kind: str
    fields: list[str]
    """private, unpriv, chroot, wakeup, maxproc, command"""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return self.fields[-1]


def parse_master_cf(text: str) -> dict[tuple[str, str], Service]:
    """master.cf services by (name, type), with their ``-o`` options."""
    services: dict[tuple[str, str], Service] = {}
    current: Service | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            assert current is not None
            flag, option = line.split()
            assert flag == "-o", line
            name, _, value = option.partition("=")
            assert name not in current.options, f"{current.name}: {name} is set twice"
            current.options[name] = value
            continue
        name, kind, *fields = line.split()
        assert len(fields) == 6, line
        assert (name, kind) not in services, f"{name}/{kind} is defined twice"
        current = services[(name, kind)] = Service(name, kind, fields)
    return services


def restrictions(value: str) -> list[str]:
    return [item.strip() for item in value.split(",")]


@pytest.fixture
def example_copy(example: LoadedPolicy, tmp_path: Path) -> Copy:
    return postfix_copy(render(example), tmp_path / "root")


@pytest.fixture
def compiled(example: LoadedPolicy, example_copy: Copy) -> Copy:
    for rendered in render(example):
        if rendered.postmap:
            assert complaints(compile_table(example_copy, rendered)) == [], rendered.path
    return example_copy


@pytest.fixture(scope="module")
def main_cf(example: LoadedPolicy) -> dict[str, str]:
    return parse_main_cf(by_path(render(example))["/etc/postfix/main.cf"])


@pytest.fixture(scope="module")
def master_cf(example: LoadedPolicy) -> dict[tuple[str, str], Service]:
    return parse_master_cf(by_path(render(example))["/etc/postfix/master.cf"])


@pytest.fixture(scope="module")
def sender_transport(example: LoadedPolicy) -> dict[str, str]:
    return table_entries(by_path(render(example))[f"{MAPS_DIR}/sender_transport"])


def table_entries(text: str) -> dict[str, str]:
    entries = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("\t")
            entries[key] = value
    return entries


# ---------------------------------------------------- Postfix reads it all


def test_postconf_reads_main_cf_without_a_warning(example_copy: Copy) -> None:
    result = postconf_n(example_copy.config)
    assert complaints(result) == [], result.stderr
    assert "message_size_limit = 52428800" in result.stdout.splitlines()


def test_postconf_reads_master_cf(example_copy: Copy) -> None:
    result = postconf_m(example_copy.config)
    assert complaints(result) == [], result.stderr
    assert result.stdout.startswith("smtp ")


def test_postfix_check_passes(example_copy: Copy) -> None:
    assert complaints(postfix_check(example_copy.config)) == []


def test_the_helpers_read_the_files_as_postfix_does(
    example_copy: Copy, main_cf: dict[str, str], master_cf: dict[tuple[str, str], Service]
) -> None:
    """What the semantic tests below read is what Postfix itself reads."""
    postconf = parse_main_cf(postconf_n(example_copy.config).stdout)
    assert postconf.pop("config_directory") == str(example_copy.config)
    for name, value in scaffolding_for(example_copy.root).items():
        assert postconf.pop(name) == value
    assert postconf == {name: v for name, v in main_cf.items() if name != "maillog_file"}

    listed = [line.split() for line in postconf_m(example_copy.config).stdout.splitlines()]
    assert [(name, kind) for name, kind, *_ in listed] == list(master_cf)
    per_service = run("postconf", "-c", example_copy.config, "-P").stdout.splitlines()
    options = {
        f"{s.name}/{s.kind}/{name} = {value}"
        for s in master_cf.values()
        for name, value in s.options.items()
    }
    assert set(per_service) == options


def test_each_list_setting_belongs_to_a_transport_postfix_knows(example_copy: Copy) -> None:
    """postconf only resolves pw_lists_main_* once master.cf defines pw_lists_main."""
    result = run(
        "postconf", "-c", example_copy.config, "-h", "pw_lists_main_destination_concurrency_limit"
    )
    assert complaints(result) == []
    assert result.stdout.strip() == "2"


def test_every_table_compiles(example: LoadedPolicy, example_copy: Copy) -> None:
    tables = [f for f in render(example) if f.postmap]
    assert {f.path.rsplit("/", 1)[1]: f.postmap for f in tables} == {
        "virtual_domains": "postmap",
        "virtual_mailboxes": "postmap",
        "virtual_aliases": "postmap",
        "sender_login": "postmap",
        "local_sender_domains": "postmap",
        "helo_access": "postmap",
        "submission_senders": "postmap",
        "sender_transport": "postmap",
        "aliases": "postalias",
    }
    for rendered in tables:
        result = compile_table(example_copy, rendered)
        assert complaints(result) == [], f"{rendered.path}: {result.stderr}"
        assert example_copy.table(rendered.path + ".db").is_file()


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("sender_login", "alice@example.com", "alice@example.com"),
        ("sender_login", "billing@example.com", "alice@example.com"),
        ("sender_login", "info@example.com", "alice@example.com"),
        ("sender_login", "nobody@example.com", None),
        ("virtual_aliases", "all-staff@example.com", "pwlist-all-staff=example.com@localhost"),
        ("virtual_aliases", "sales@example.com", "alice@example.com"),
        ("virtual_domains", "example.org", "OK"),
        ("virtual_domains", "example.net", None),
        ("virtual_mailboxes", "bob@example.org", "example.org/bob/"),
        ("sender_transport", "@example.com", "pw_main_203_0_113_10"),
        ("sender_transport", "newsletter@example.com", "pw_bulk_203_0_113_20"),
        (
            "sender_transport",
            "owner-pwlist-all-staff=example.com@mail.example.com",
            "pw_lists_main",
        ),
        ("local_sender_domains", "example.org", LOCAL_SENDER_REJECT),
        ("local_sender_domains", "example.net", None),
    ],
)
def test_compiled_tables_answer(compiled: Copy, table: str, key: str, value: str | None) -> None:
    assert lookup(compiled, f"{MAPS_DIR}/{table}", key) == value


def test_compiled_aliases_expand_the_list(compiled: Copy) -> None:
    aliases = f"{MAPS_DIR}/aliases"
    alias = list_alias("all-staff@example.com")
    assert lookup(compiled, aliases, alias, "postalias") == "alice@example.com, bob@example.org"
    assert lookup(compiled, aliases, f"owner-{alias}", "postalias") == "alice@example.com"
    assert lookup(compiled, aliases, "abuse", "postalias") == "postmaster@example.com"


# --------------------------------------- the validators catch broken files


def test_a_misspelled_parameter_is_only_a_warning_and_still_fails(example_copy: Copy) -> None:
    rewrite(example_copy.config / "main.cf", "\nmessage_size_limit = ", "\nmesage_size_limit = ")

    result = postconf_n(example_copy.config)
    assert result.returncode == 0  # Postfix's own verdict: fine
    found = complaints(result)
    assert len(found) == 1
    assert "unused parameter: mesage_size_limit=52428800" in found[0]


def test_a_bad_field_count_in_master_cf_fails(example_copy: Copy) -> None:
    master_cf = example_copy.config / "master.cf"
    text = master_cf.read_text()
    line = next(line for line in text.splitlines() if line.startswith("pickup "))
    rewrite(master_cf, line, "pickup unix n - n 60 pickup")

    result = postconf_m(example_copy.config)
    assert result.returncode != 0
    assert any("bad field count" in c for c in complaints(result))
    assert postfix_check(example_copy.config).returncode != 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("keyonly\n", "expected format: key whitespace value"),
        ("alice@example.com\tbob@example.org\n", 'duplicate entry: "alice@example.com"'),
    ],
    ids=["no-value", "duplicate"],
)
def test_a_malformed_table_line_is_a_warning_and_fails(
    example: LoadedPolicy, example_copy: Copy, line: str, message: str
) -> None:
    (rendered,) = [f for f in render(example) if f.path.endswith("/sender_login")]
    table = example_copy.table(rendered.path)
    table.write_text(table.read_text() + line)
    settle(table)

    result = compile_table(example_copy, rendered)
    assert result.returncode == 0  # postmap's own verdict: fine
    assert [c for c in complaints(result) if message in c], result.stderr


def test_a_missing_table_fails(example: LoadedPolicy, example_copy: Copy) -> None:
    (rendered,) = [f for f in render(example) if f.postmap == "postalias"]
    example_copy.table(rendered.path).unlink()

    result = compile_table(example_copy, rendered)
    assert result.returncode != 0
    assert any("fatal: open" in c for c in complaints(result))


# ------------------------------------------------- what the config enforces


def test_submission_ports_require_tls_and_a_login(
    main_cf: dict[str, str], master_cf: dict[tuple[str, str], Service]
) -> None:
    submission = master_cf[("submission", "inet")]
    submissions = master_cf[("submissions", "inet")]
    for service in (submission, submissions):
        assert service.command == "smtpd"
        assert service.options["smtpd_sasl_auth_enable"] == "yes"
        for name, value in SUBMISSION_RESTRICTIONS.items():
            assert service.options[name] == value
            assert value.removeprefix("$") in main_cf
    assert submission.options["smtpd_tls_security_level"] == "encrypt"
    assert "smtpd_tls_wrappermode" not in submission.options
    assert submissions.options["smtpd_tls_wrappermode"] == "yes"
    assert main_cf["smtpd_tls_auth_only"] == "yes"

    assert restrictions(main_cf["pw_submission_client_restrictions"]) == [
        "permit_sasl_authenticated",
        "reject",
    ]
    assert restrictions(main_cf["pw_submission_relay_restrictions"]) == [
        "permit_sasl_authenticated",
        "reject",
    ]
    assert "reject_authenticated_sender_login_mismatch" in restrictions(
        main_cf["pw_submission_sender_restrictions"]
    )
    assert main_cf["smtpd_sender_login_maps"] == f"hash:{MAPS_DIR}/sender_login"


def test_port_25_never_relays_and_offers_no_login(
    main_cf: dict[str, str], master_cf: dict[tuple[str, str], Service]
) -> None:
    smtp = master_cf[("smtp", "inet")]
    assert (smtp.command, smtp.options) == ("smtpd", {})
    relay = restrictions(main_cf["smtpd_relay_restrictions"])
    assert relay[-1] == "reject_unauth_destination"
    assert "permit_sasl_authenticated" not in relay
    assert main_cf["smtpd_sasl_auth_enable"] == "no"
    assert f"check_sender_access hash:{MAPS_DIR}/local_sender_domains" in restrictions(
        main_cf["smtpd_sender_restrictions"]
    )


def test_the_policy_daemon_is_asked_on_every_path(main_cf: dict[str, str]) -> None:
    port25 = restrictions(main_cf["smtpd_recipient_restrictions"])
    submission = restrictions(main_cf["pw_submission_recipient_restrictions"])
    assert POLICY_SERVICE in port25
    # it counts unknown recipients: asked before they are rejected
    assert port25.index(POLICY_SERVICE) < port25.index("reject_unlisted_recipient")
    assert POLICY_SERVICE in submission
    # permit_sasl_authenticated ends the list: anything after it is never asked
    assert submission.index(POLICY_SERVICE) < submission.index("permit_sasl_authenticated")
    assert restrictions(main_cf["smtpd_end_of_data_restrictions"]) == [POLICY_SERVICE]


def test_message_size_limit(example: LoadedPolicy, main_cf: dict[str, str]) -> None:
    assert main_cf["message_size_limit"] == "52428800"
    assert int(main_cf["message_size_limit"]) == int(example.policy.server.message_size_limit)


def test_port25_min_tls_sets_the_oldest_protocol(
    example: LoadedPolicy, main_cf: dict[str, str]
) -> None:
    assert main_cf["smtpd_tls_protocols"] == ">=TLSv1.2"
    server = example.policy.server.model_copy(update={"port25_min_tls": "TLSv1"})
    lenient = example.policy.model_copy(update={"server": server})
    rendered = parse_main_cf(
        by_path(render(replace(example, policy=lenient)))["/etc/postfix/main.cf"]
    )
    assert rendered["smtpd_tls_protocols"] == ">=TLSv1"
    # the logins' own floor does not move
    assert rendered["smtpd_tls_mandatory_protocols"] == ">=TLSv1.2"


def test_one_smtp_transport_per_outbound_address(
    example: LoadedPolicy, master_cf: dict[tuple[str, str], Service]
) -> None:
    pools = example.policy.ip_pools
    expected = {
        transport_name(name, a.address): (a.address, a.helo or pool.helo)
        for name, pool in pools.items()
        for a in pool.addresses
    }
    assert len(expected) == 3
    found = {
        s.name: (s.options["smtp_bind_address"], s.options["smtp_helo_name"])
        for s in master_cf.values()
        if s.name.startswith("pw_") and not s.name.startswith("pw_lists_")
    }
    assert found == expected
    assert found["pw_main_203_0_113_10"] == ("203.0.113.10", "out.example.com")
    assert found["pw_bulk_203_0_113_20"] == ("203.0.113.20", "bulk.example.com")
    for name in expected:
        service = master_cf[(name, "unix")]
        assert service.command == "smtp"
        assert service.options["syslog_name"] == f"postfix/{name}"


def test_a_draining_address_takes_no_new_mail_but_keeps_its_transport(
    master_cf: dict[tuple[str, str], Service], sender_transport: dict[str, str]
) -> None:
    draining = transport_name("main", "203.0.113.11")
    assert master_cf[(draining, "unix")].options["smtp_bind_address"] == "203.0.113.11"
    assert draining not in sender_transport.values()
    used = {v for v in sender_transport.values() if not v.startswith("pw_lists_")}
    binds = {master_cf[(t, "unix")].options["smtp_bind_address"] for t in used}
    assert "203.0.113.11" not in binds
    assert master_cf[(list_transport_name("main"), "unix")].options["smtp_bind_address"] == (
        "203.0.113.10"
    )


def test_no_sender_is_spread_onto_a_draining_address(write_policy: WritePolicy) -> None:
    """Enough senders that spreading over both addresses would put some on the draining one."""
    users = "".join(f"  user{n}@example.com: {{ip_pool: main}}\n" for n in range(12))
    loaded = load_policy(write_policy(DRAINING_POLICY + users))
    files = by_path(render(loaded))
    entries = table_entries(files[f"{MAPS_DIR}/sender_transport"])
    assert len(entries) == 13
    assert set(entries.values()) == {transport_name("main", "203.0.113.61")}
    master_cf = parse_master_cf(files["/etc/postfix/master.cf"])
    draining = master_cf[(transport_name("main", "203.0.113.60"), "unix")]
    assert draining.options["smtp_bind_address"] == "203.0.113.60"


def test_the_bulk_user_leaves_through_the_bulk_pool(sender_transport: dict[str, str]) -> None:
    assert sender_transport["newsletter@example.com"] == transport_name("bulk", "203.0.113.20")
    assert sender_transport["@example.com"] == transport_name("main", "203.0.113.10")
    assert sender_transport["@example.org"] == transport_name("main", "203.0.113.10")


def test_list_mail_leaves_through_the_list_transport(
    main_cf: dict[str, str],
    master_cf: dict[tuple[str, str], Service],
    sender_transport: dict[str, str],
) -> None:
    owner = f"owner-{list_alias('all-staff@example.com')}@mail.example.com"
    assert sender_transport[owner] == "pw_lists_main"
    lists_main = master_cf[("pw_lists_main", "unix")]
    assert lists_main.command == "smtp"
    assert lists_main.options["smtp_helo_name"] == "out.example.com"
    assert main_cf["pw_lists_main_destination_concurrency_limit"] == "2"
    assert main_cf["pw_lists_main_destination_rate_delay"] == "1s"
    # the owner- alias becomes the envelope sender, at $myorigin
    assert (main_cf["owner_request_special"], main_cf["expand_owner_alias"]) == ("yes", "no")
    assert main_cf["myorigin"] == "$myhostname"
    assert main_cf["myhostname"] == "mail.example.com"


def test_senders_reach_their_transport_through_policyd_or_the_table(
    example: LoadedPolicy, tmp_path: Path, sender_transport: dict[str, str]
) -> None:
    """Run-time pools (the default) ask postwarden-policyd's socketmap, which answers
    as the static table does until an address changes state; without them, the table."""
    host = HostSettings()
    main_cf = parse_main_cf(by_path(render(example, host))["/etc/postfix/main.cf"])
    socketmap = f"socketmap:inet:{host.policyd_socketmap_listen}:transport"
    assert main_cf["sender_dependent_default_transport_maps"] == socketmap
    assert policyd_settings(host).socketmap_listen == host.policyd_socketmap_listen
    runtime = PoolRuntime(example.policy, example.policy.server.hostname)
    assert {key: runtime.lookup(key) for key in sender_transport} == sender_transport

    static = HostSettings(runtime_pools=False)
    files = render(example, static)
    main_cf = parse_main_cf(by_path(files)["/etc/postfix/main.cf"])
    table = f"hash:{MAPS_DIR}/sender_transport"
    assert main_cf["sender_dependent_default_transport_maps"] == table
    assert policyd_settings(static).socketmap_listen is None
    copy = postfix_copy(files, tmp_path / "root")
    assert complaints(postconf_n(copy.config)) == []
    assert complaints(postfix_check(copy.config)) == []


# ------------------------------------------------------------------ failover


def test_a_pool_with_only_quarantined_addresses_falls_over(
    write_policy: WritePolicy, tmp_path: Path
) -> None:
    loaded = load_policy(write_policy(FAILOVER_POLICY))
    files = render(loaded)
    entries = table_entries(by_path(files)[f"{MAPS_DIR}/sender_transport"])
    backup = transport_name("backup", "203.0.113.50")
    assert entries == {
        "@example.com": backup,
        "carol@example.com": backup,
        f"owner-{list_alias('team@example.com')}@mail.example.com": "pw_lists_primary",
    }
    master_cf = parse_master_cf(by_path(files)["/etc/postfix/master.cf"])
    assert master_cf[(backup, "unix")].options == {
        "smtp_bind_address": "203.0.113.50",
        "smtp_helo_name": "backup.example.com",
        "syslog_name": f"postfix/{backup}",
    }
    # the list transport of the quarantined pool binds to the failover's address
    lists = master_cf[("pw_lists_primary", "unix")].options
    assert (lists["smtp_bind_address"], lists["smtp_helo_name"]) == (
        "203.0.113.50",
        "backup.example.com",
    )

    copy = postfix_copy(files, tmp_path / "root")
    assert complaints(postconf_n(copy.config)) == []
    assert complaints(postconf_m(copy.config)) == []
    assert complaints(postfix_check(copy.config)) == []


# ------------------------------------------------------------- known bugs

COLLIDING_LISTS = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.com
domains:
  example.com: {}
users:
  ops@example.com: {}
  eve@example.com: {}
lists:
  team.a@example.com:
    members: [ops@example.com]
  team-a@example.com:
    members: [eve@example.com]
"""


def test_two_lists_never_share_a_local_alias(write_policy: WritePolicy, tmp_path: Path) -> None:
    loaded = load_policy(write_policy(COLLIDING_LISTS))
    files = render(loaded)
    aliases = {list_alias(address) for address in loaded.policy.lists}
    assert len(aliases) == len(loaded.policy.lists)

    copy = postfix_copy(files, tmp_path / "root")
    for rendered in files:
        if rendered.postmap:
            assert complaints(compile_table(copy, rendered)) == [], rendered.path
