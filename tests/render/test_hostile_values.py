"""Hostile strings in every string of the policy and of the host settings: either
`validate` refuses them, or every rendered file has exactly the structure it has
without them (the same lines, the same fields, the same YAML tree). A value can
never add a line, a field, a list item or a directive to a config file.

A second set of tests goes around the models, as a caller that skipped them
would, and shows the renderer's own guard refusing each such value where it lands.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from postwarden.policy.secrets import Secrets
from postwarden.render.guard import UnsafeValue
from postwarden.render.host import HostSettings
from postwarden.render.render import render
from postwarden.render.tree import RenderedTree
from tests.conftest import EXAMPLE_INVENTORY

FRAGMENTS = [
    "\n",
    "\r",
    "\r\n",
    "\nrelay_domains = static:ALL\n",
    "\n}\nservice x {\n",
    "\x00",
    "\t",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x85",
    "\u2028",
    "\u2029",
    " ",
    ":",
    ",",
    "#",
    "=",
    "{",
    "}",
    "$",
    "%",
    '"',
    "'",
    ";",
    "|",
    "/",
    "\\",
    "<",
    ">",
    "[",
    "]",
    "@",
]
"""Line breaks of every kind, controls, and the separators and syntax of the targets."""

# What counts as structure in each kind of file: a hostile value that got through
# would change how many of these a line holds.
_POSTFIX_CF = "\n\r\t =#,${}"
SYNTAX = {
    "/etc/postfix/main.cf": _POSTFIX_CF,
    "/etc/postfix/master.cf": _POSTFIX_CF,
    "/etc/postfix/postwarden/aliases": '\n\r\t :,#|"',
    "/etc/postfix/postwarden/": "\n\r\t #,",
    "/etc/dovecot/postwarden/": "\n\r\t :",
    "/etc/dovecot/": '\n\r\t{}#<=$%"',
    "/etc/rspamd/": '\n\r\t;"{}#=$ ',
    "/etc/fail2ban/": "\n\r\t[]=%#;",
}

SETTINGS_EVERYWHERE: dict[str, Any] = {
    "name": "mx1.example.com",
    "mynetworks": ["127.0.0.0/8", "[::1]/128", "192.0.2.0/24"],
    "relayhost": "[smtp.example.net]:587",
    "policyd_listen": "127.0.0.1:10040",
    "policyd_metrics_listen": "127.0.0.1:9466",
    "policyd_socketmap_listen": "127.0.0.1:10046",
    "rspamd_milter": "inet:127.0.0.1:11332",
    "mail_root": "/srv/vmail",
    "dnsbl_zones": ["zen.spamhaus.org"],
    "dnsbl_nameserver": "127.0.0.53",
    "policyd_store": "redis",
    "redis_url": "redis://:secret@10.0.0.5:6379/0",
}
"""A host settings file that sets every string the renderer prints."""


class _Secret(str):
    """`!secret NAME`, kept through a load and a dump of the YAML."""


class _Loader(yaml.CSafeLoader):
    """YAML 1.2's booleans, as postwarden reads them: the key `on:` stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))


class _Dumper(yaml.CSafeDumper):
    pass


def _secret(loader: yaml.CSafeLoader, node: yaml.ScalarNode) -> _Secret:
    return _Secret(loader.construct_scalar(node))


_Loader.add_constructor("!secret", _secret)
_Dumper.add_representer(
    _Secret, lambda dumper, value: dumper.represent_scalar("!secret", str(value))
)

POLICY_TEXT = (EXAMPLE_INVENTORY / "policy.yml").read_text(encoding="utf-8")
POLICY_DATA: dict[str, Any] = yaml.load(POLICY_TEXT, Loader=_Loader)


Path_ = tuple[Any, ...]


NAMED_BY_THE_ADMIN = {
    "domains",
    "users",
    "lists",
    "throttles",
    "ip_pools",
    "notifications",
    "reports",
    "headers",
}
"""Mappings whose keys the administrator chooses (the other keys are the format's own,
and any change to them is an unknown key)."""


def string_places(data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, bool]]:
    """Every string in the data the administrator writes: (path, is it a mapping key)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and path and path[-1] in NAMED_BY_THE_ADMIN:
                yield (*path, key), True
            yield from string_places(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from string_places(value, (*path, index))
    elif isinstance(data, str) and not isinstance(data, _Secret):
        yield path, False


def mutated(data: Any, path: Path_, is_key: bool, insert: str) -> Any:
    """A deep copy of data with ``insert`` put in the middle of the string at path."""

    def spliced(text: str) -> str:
        middle = len(text) // 2
        return text[:middle] + insert + text[middle:]

    def walk(node: Any, rest: Path_) -> Any:
        if not rest:
            return type(node)(spliced(node)) if isinstance(node, _Secret) else spliced(node)
        head, tail = rest[0], rest[1:]
        if isinstance(node, dict):
            copy: dict[Any, Any] = {}
            for key, value in node.items():
                if key == head and is_key and not tail:
                    copy[spliced(key)] = value
                elif key == head:
                    copy[key] = walk(value, tail)
                else:
                    copy[key] = value
            return copy
        items = list(node)
        items[head] = walk(items[head], tail)
        return items

    return walk(data, path)


def structure(tree: RenderedTree) -> dict[str, Any]:
    """What a hostile value must not change: per file, the YAML tree's shape, or each
    line's count of the characters that are syntax in that file."""
    shapes: dict[str, Any] = {}
    for path, rendered in tree.items():
        if path.endswith((".yml", ".yaml")):
            shapes[path] = _yaml_shape(yaml.load(rendered.content, Loader=_Loader))
            continue
        syntax = next((chars for prefix, chars in SYNTAX.items() if path.startswith(prefix)), "")
        lines = rendered.content.split("\n")
        shapes[path] = [Counter(c for c in line if c in syntax or c < " ") for line in lines]
    return shapes


def _yaml_shape(node: Any) -> Any:
    if isinstance(node, dict):
        return ("map", len(node), sorted(map(repr, map(_yaml_shape, node.values()))))
    if isinstance(node, list):
        return ("list", [_yaml_shape(v) for v in node])
    return type(node).__name__


def load_text(tmp: Path, text: str) -> LoadedPolicy:
    policy = tmp / "policy.yml"
    policy.write_text(text, encoding="utf-8")
    return load_policy(policy, EXAMPLE_INVENTORY / "secrets.yml")


@pytest.fixture(scope="module")
def baseline() -> tuple[LoadedPolicy, HostSettings, dict[str, Any]]:
    loaded = load_policy(EXAMPLE_INVENTORY / "policy.yml")
    host = HostSettings.model_validate(SETTINGS_EVERYWHERE)
    return loaded, host, structure(render(loaded, host))


def _holds_or_refused(tmp: Path, data: Any, host: HostSettings, expected: dict[str, Any]) -> bool:
    """True when validate refused the policy; otherwise the render kept its structure."""
    text = yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=4096)
    try:
        loaded = load_text(tmp, text)
    except PolicyInvalid:
        return True
    got = structure(render(loaded, host))
    changed = sorted(path for path in got if got[path] != expected.get(path))
    assert not changed, f"a value accepted by validate changed the structure of {changed}"
    return False


PLACES = list(string_places(POLICY_DATA))


def test_the_policy_survives_the_round_trip(
    tmp_path: Path, baseline: tuple[LoadedPolicy, HostSettings, dict[str, Any]]
) -> None:
    """The tests below are only as good as this: unchanged, the dumped policy is valid
    and renders exactly the baseline's structure."""
    _, host, expected = baseline
    assert not _holds_or_refused(tmp_path, POLICY_DATA, host, expected)
    assert len(PLACES) > 100


@pytest.mark.parametrize(("path", "is_key"), PLACES, ids=[".".join(map(str, p)) for p, _ in PLACES])
def test_no_policy_string_changes_a_files_structure(
    tmp_path: Path,
    baseline: tuple[LoadedPolicy, HostSettings, dict[str, Any]],
    path: Path_,
    is_key: bool,
) -> None:
    _, host, expected = baseline
    refused = 0
    for fragment in FRAGMENTS:
        refused += _holds_or_refused(
            tmp_path, mutated(POLICY_DATA, path, is_key, fragment), host, expected
        )
    # every place refuses at least the line breaks
    assert refused >= 12


def test_every_line_break_is_refused_everywhere(tmp_path: Path) -> None:
    """The critical case, said plainly: no string anywhere may carry a line break."""
    for path, is_key in PLACES:
        for fragment in ("\n", "\r", "\u2028", "\nrelay_domains = static:ALL\n"):
            text = yaml.dump(
                mutated(POLICY_DATA, path, is_key, fragment),
                Dumper=_Dumper,
                allow_unicode=True,
                sort_keys=False,
            )
            with pytest.raises(PolicyInvalid):
                load_text(tmp_path, text)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    place=st.sampled_from(PLACES),
    insert=st.text(
        alphabet=st.sampled_from([*(f for f in FRAGMENTS if len(f) == 1), "a", "0", "-", ".", "é"]),
        min_size=1,
        max_size=6,
    ),
)
def test_random_hostile_text_changes_no_files_structure(
    tmp_path: Path,
    baseline: tuple[LoadedPolicy, HostSettings, dict[str, Any]],
    place: tuple[Path_, bool],
    insert: str,
) -> None:
    _, host, expected = baseline
    _holds_or_refused(tmp_path, mutated(POLICY_DATA, *place, insert), host, expected)


SETTING_PLACES = list(string_places(SETTINGS_EVERYWHERE))


@pytest.mark.parametrize(
    "path", [p for p, _ in SETTING_PLACES], ids=[".".join(map(str, p)) for p, _ in SETTING_PLACES]
)
def test_no_host_setting_changes_a_files_structure(
    baseline: tuple[LoadedPolicy, HostSettings, dict[str, Any]], path: Path_
) -> None:
    loaded, _, expected = baseline
    refused = 0
    for fragment in FRAGMENTS:
        try:
            host = HostSettings.model_validate(mutated(SETTINGS_EVERYWHERE, path, False, fragment))
        except ValidationError:
            refused += 1
            continue
        got = structure(render(loaded, host))
        changed = sorted(p for p in got if got[p] != expected.get(p))
        assert not changed, f"{fragment!r} in {path} changed the structure of {changed}"
    assert refused >= 12


# ------------------------------------------------ the renderer's own guard


def _with_server(loaded: LoadedPolicy, **changes: Any) -> LoadedPolicy:
    """The policy with server fields changed without validation, as a careless caller."""
    server = loaded.policy.server.model_copy(update=changes)
    return replace(loaded, policy=loaded.policy.model_copy(update={"server": server}))


def test_the_guard_refuses_a_line_break_in_a_path(example: LoadedPolicy) -> None:
    assert example.policy.server.tls is not None
    tls = example.policy.server.tls.model_copy(
        update={"cert": "/etc/ssl/x.crt\nrelay_domains = static:ALL"}
    )
    with pytest.raises(UnsafeValue, match="line break"):
        render(_with_server(example, tls=tls), HostSettings())


def test_the_guard_refuses_a_space_in_a_helo_name(example: LoadedPolicy) -> None:
    pool = example.policy.ip_pools["main"].model_copy(update={"helo": "out.example.com -o x=y"})
    policy = example.policy.model_copy(
        update={"ip_pools": {**example.policy.ip_pools, "main": pool}}
    )
    with pytest.raises(UnsafeValue, match=r"master\.cf"):
        render(replace(example, policy=policy), HostSettings())


def test_the_guard_refuses_a_command_as_a_list_member(example: LoadedPolicy) -> None:
    address = "all-staff@example.com"
    mailing_list = example.policy.lists[address].model_copy(
        update={"members": ["alice@example.com", "|/bin/sh -c id"]}
    )
    policy = example.policy.model_copy(update={"lists": {address: mailing_list}})
    with pytest.raises(UnsafeValue, match="aliases"):
        render(replace(example, policy=policy), HostSettings())


def test_the_guard_refuses_a_separator_in_a_password_hash(example: LoadedPolicy) -> None:
    hashes = {**example.secrets.password_hashes, "alice@example.com": "$argon2id$x:0:0::/:/bin/sh"}
    secrets = Secrets(example.secrets.values, hashes, example.secrets.path)
    with pytest.raises(UnsafeValue, match="passdb"):
        render(replace(example, secrets=secrets), HostSettings())


def test_the_guard_refuses_a_line_break_in_a_host_setting(example: LoadedPolicy) -> None:
    host = HostSettings().model_copy(update={"mail_root": "/var/vmail\nmail_uid = root"})
    with pytest.raises(UnsafeValue, match="dovecot"):
        render(example, host)


def test_the_guard_refuses_a_line_break_in_the_policys_name(example: LoadedPolicy) -> None:
    with pytest.raises(UnsafeValue, match="header"):
        render(example, HostSettings(), source="policy.yml\nrelay_domains = static:ALL")


def test_a_refused_value_writes_nothing(tmp_path: Path) -> None:
    """The command line: a value only the renderer's guard refuses (a policy file whose
    name holds a line break) stops before the output directory exists."""
    from typer.testing import CliRunner

    from postwarden.cli import app

    hostile = tmp_path / "policy\nrelay_domains = static:ALL.yml"
    shutil.copy(EXAMPLE_INVENTORY / "policy.yml", hostile)
    shutil.copy(EXAMPLE_INVENTORY / "secrets.yml", tmp_path / "secrets.yml")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(hostile), "-o", str(out)])
    assert result.exit_code == 1
    assert "nothing was written" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
