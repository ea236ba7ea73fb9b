"""The YAML reader: YAML 1.2 core types, exact positions, problems instead of exceptions."""

from __future__ import annotations

import pytest

from postwarden.policy.secret_types import SecretRef, VaultText
from postwarden.policy.yaml_source import (
    MAX_ALIAS_EXPANSION,
    NodeIndex,
    parse,
    resolve_plain,
)


def test_core_schema_keeps_yaml_11_words_as_text() -> None:
    doc = parse("on: yes\noff: no\ny: n\nnorway: NO\n")
    assert doc.data == {"on": "yes", "off": "no", "y": "n", "norway": "NO"}
    assert not doc.problems


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("017", 17),
        ("0o17", 15),
        ("0x1F", 31),
        ("-3", -3),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("'17'", "17"),
        ("203.0.113.10", "203.0.113.10"),
        ("'+15555550100'", "+15555550100"),
        ("200/h", "200/h"),
        ("12:30", "12:30"),
    ],
)
def test_scalars(text: str, value: object) -> None:
    doc = parse(f"v: {text}\n")
    assert doc.data == {"v": value}
    assert type(doc.data["v"]) is type(value)


def test_infinity_and_nan() -> None:
    doc = parse("a: .inf\nb: -.Inf\nc: .nan\n")
    assert doc.data["a"] == float("inf")
    assert doc.data["b"] == float("-inf")
    assert doc.data["c"] != doc.data["c"]


def test_resolver_cache_does_not_mix_quoted_and_plain() -> None:
    doc = parse("a: 17\nb: '17'\nc: 17\n")
    assert doc.data == {"a": 17, "b": "17", "c": 17}


def test_resolve_plain_empty_is_null() -> None:
    assert resolve_plain("").endswith("null")


def test_secret_and_vault_tags() -> None:
    doc = parse("password: !secret relay_password\nx: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n")
    assert doc.data["password"] == SecretRef("relay_password")
    assert isinstance(doc.data["x"], VaultText)
    assert not doc.problems


def test_secret_without_name() -> None:
    doc = parse("password: !secret\n")
    assert [(p.line, p.column, p.message) for p in doc.problems] == [
        (0, 10, "!secret needs a name")
    ]


def test_duplicate_key_points_at_the_second_and_names_the_first() -> None:
    doc = parse("users:\n  a@x.org: {}\n  b@x.org: {}\n  a@x.org: {name: again}\n")
    (problem,) = doc.problems
    assert (problem.line, problem.column) == (3, 2)
    assert problem.message == "duplicate key 'a@x.org'"
    assert "line 2" in (problem.hint or "")
    assert doc.data["users"]["a@x.org"] == {}


def test_unknown_tag() -> None:
    doc = parse("a: !secrte x\n")
    (problem,) = doc.problems
    assert problem.message == "unknown tag '!secrte'"
    assert (problem.line, problem.column) == (0, 3)


def test_merge_keys_are_refused() -> None:
    doc = parse("base: &b {a: 1}\nx:\n  <<: *b\n")
    (problem,) = doc.problems
    assert "merge keys" in problem.message
    assert (problem.line, problem.column) == (2, 2)


def test_anchors_and_aliases_are_shared_values() -> None:
    doc = parse("staff: &s [a@x.org, b@x.org]\nlist: *s\n")
    assert doc.data["list"] == ["a@x.org", "b@x.org"]
    assert not doc.problems


def test_alias_bomb_is_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    doc = parse("\n".join(lines) + "\n")
    assert MAX_ALIAS_EXPANSION < 10**9
    assert any("aliases expand" in p.message for p in doc.problems)


def test_self_referencing_alias_is_a_problem_not_a_crash() -> None:
    doc = parse("a: &a [*a]\n")
    assert doc.problems
    assert "nested too deeply" in doc.problems[0].message


def test_syntax_error_position_and_hint() -> None:
    doc = parse("server:\n  hostname: a: b\n")
    (problem,) = doc.problems
    assert doc.root is None
    assert (problem.line, problem.column) == (1, 13)
    assert problem.message.startswith("YAML syntax error: mapping values are not allowed")
    assert problem.hint
    assert "quoted" in problem.hint


def test_tab_indentation_has_a_hint() -> None:
    doc = parse("server:\n\thostname: x\n")
    (problem,) = doc.problems
    assert problem.hint == "indent with spaces, not tabs"


def test_binary_junk_is_a_problem() -> None:
    doc = parse(b"server: \xff\xfe\x00junk\n")
    (problem,) = doc.problems
    assert "not UTF-8" in problem.message


def test_complex_keys_and_null_keys() -> None:
    doc = parse("? [a, b]\n: 1\n~: 2\n")
    messages = [p.message for p in doc.problems]
    assert "a key must be a plain value, not a list or mapping" in messages
    assert "a key cannot be empty (null)" in messages


def test_empty_document() -> None:
    doc = parse("# only a comment\n")
    assert doc.root is None
    assert doc.data is None
    assert not doc.problems


def test_node_index_walks_keys_and_items() -> None:
    doc = parse("events:\n  - on: queue.size\n    notify: [admins, oncall]\n")
    index = NodeIndex(doc.root)
    steps = list(index.walk(("events", 0, "notify", 1)))
    assert len(steps) == 4
    key_node, value_node = steps[-1]
    assert key_node is None
    assert (value_node.start_mark.line, value_node.start_mark.column) == (2, 21)
    assert len(list(index.walk(("events", 0, "missing")))) == 2
    assert list(index.walk(("nothing",))) == []
