"""Read a YAML file into plain data while keeping the position of every node.

libyaml (through PyYAML's C parser) composes the node tree: every node carries
its line and column, so an error anywhere can be pointed at exactly, and the
cost of keeping positions is the cost of composing. The data is then built from
the nodes by a small constructor that is faster than PyYAML's own, because the
policy needs only the YAML 1.2 core schema (``on:`` stays a string, not the
YAML 1.1 boolean) and two local tags, ``!secret`` and ``!vault``.

Nothing here raises for a user mistake: problems are collected with their
positions, and the caller decides what to do with them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from postwarden.policy.problems import Finding
from postwarden.policy.secret_types import SecretRef, VaultText

try:
    from yaml._yaml import CParser as _Parser

    HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    HAVE_LIBYAML = False

MAX_DEPTH = 64
MAX_ALIAS_EXPANSION = 1_000_000

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
SECRET_TAG = "!secret"
VAULT_TAG = "!vault"

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1023-core-schema).
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN"
)
_NUMBER_START = frozenset("-+0123456789.")


def resolve_plain(value: str) -> str:
    """The core-schema tag of a plain (unquoted) scalar."""
    if value in _NULLS:
        return _NULL
    if value in _TRUE or value in _FALSE:
        return _BOOL
    if value[0] in _NUMBER_START:
        if _INT_RE.fullmatch(value):
            return _INT
        if _FLOAT_RE.fullmatch(value):
            return _FLOAT
    return _STR


class _CoreSchemaResolver:
    """Resolver methods the C parser calls back, with a cache for repeated scalars."""

    _tags: dict[str, str]

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = self._tags[value] = resolve_plain(value)
            return tag
        return _SEQ if kind is SequenceNode else _MAP


if HAVE_LIBYAML:

    class _Composer(_CoreSchemaResolver, _Parser):
        def __init__(self, stream: str | bytes) -> None:
            _Parser.__init__(self, stream)
            self._tags = {}

else:  # pragma: no cover

    class _Composer(  # type: ignore[no-redef]
        _CoreSchemaResolver,
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
    ):
        def __init__(self, stream: str | bytes) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            self._tags = {}


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading: where it is and what it is."""

    line: int  # 0-based, as libyaml counts
    column: int
    message: str
    hint: str | None = None
    path: tuple[str | int, ...] = ()
    spoils_value: bool = False
    """The value at ``path`` is not what the file meant: its model errors are noise."""


@dataclass
class YamlDocument:
    root: Node | None
    data: Any
    problems: list[YamlProblem] = field(default_factory=list)


def parse(text: str | bytes) -> YamlDocument:
    """Compose and construct one YAML document; collect problems, never raise."""
    try:
        composer = _Composer(text)
        root = composer.get_single_node()
    except yaml.MarkedYAMLError as error:
        return YamlDocument(None, None, [_syntax_problem(error, text)])
    except yaml.YAMLError:  # ReaderError: bytes that are not text
        return YamlDocument(None, None, [_reader_problem(text)])
    except RecursionError:
        return YamlDocument(None, None, [YamlProblem(0, 0, "the document is nested too deeply")])
    if root is None:
        return YamlDocument(None, None)
    builder = _Builder()
    data = builder.build(root, 0, ())
    return YamlDocument(root, data, builder.problems)


def yaml_findings(
    document: YamlDocument, source: Literal["policy", "secrets", "settings"]
) -> list[Finding]:
    return [
        Finding(p.path, p.message, p.hint, source=source, at=(p.line, p.column))
        for p in document.problems
    ]


def _syntax_problem(error: yaml.MarkedYAMLError, text: str | bytes) -> YamlProblem:
    mark = error.problem_mark or error.context_mark
    opened = error.context or ""
    if error.context_mark is not None and ("flow" in opened or "quoted" in opened):
        # an unclosed bracket or quote: the parser gives up far away, where it opened is
        # what the administrator has to fix
        mark = error.context_mark
    problem = (error.problem or "invalid YAML").strip()
    context = (error.context or "").strip()
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    hint = None
    if _character_at(text, mark) == "\t":
        hint = "indent with spaces, not tabs"
    elif "mapping values are not allowed" in problem:
        hint = "a value containing ': ' must be quoted, or the indentation is off"
    elif "could not find expected ':'" in problem or "expected <block end>" in problem:
        hint = "check the indentation of this line and the one before"
    elif "duplicate anchor" in problem or "undefined alias" in problem:
        hint = "define an anchor (&name) before using it as an alias (*name)"
    return YamlProblem(mark.line if mark else 0, mark.column if mark else 0, message, hint)


def _character_at(text: str | bytes, mark: yaml.Mark | None) -> str:
    if mark is None:
        return ""
    lines = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).splitlines()
    if mark.line >= len(lines) or mark.column >= len(lines[mark.line]):
        return ""
    return lines[mark.line][mark.column]


def _reader_problem(text: str | bytes) -> YamlProblem:
    """Where the first byte or character that YAML cannot read is, and what it is."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            before = raw[: error.start]
            line = before.count(b"\n")
            column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace"))
            return YamlProblem(
                line,
                column,
                f"the file is not UTF-8 text (byte 0x{raw[error.start]:02x})",
                "policy files are YAML text in UTF-8",
            )
    for line_number, line_text in enumerate(text.splitlines()):
        for column, character in enumerate(line_text):
            if not _printable(character):
                return YamlProblem(
                    line_number,
                    column,
                    f"the character U+{ord(character):04X} is not allowed in YAML",
                    "remove it; control characters cannot appear in a YAML file",
                )
    return YamlProblem(0, 0, "the file cannot be read as YAML text")


def _printable(character: str) -> bool:
    code = ord(character)
    return (
        character in "\t\n\r"
        or 0x20 <= code <= 0x7E
        or code == 0x85
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or code >= 0x10000
    ) and code != 0xFEFF


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording problems."""

    def __init__(self) -> None:
        self.problems: list[YamlProblem] = []
        self._built: dict[int, tuple[Any, int]] = {}
        self._expanded = 0

    def build(self, node: Node, depth: int, path: tuple[str | int, ...]) -> Any:
        cls = node.__class__
        if cls is ScalarNode:
            return self._scalar(node, path)
        seen = self._built.get(id(node))
        if seen is not None:  # an alias: the same node reached again
            self._expanded += seen[1]
            if self._expanded > MAX_ALIAS_EXPANSION:
                self._problem(node, "aliases expand into too many values", path)
                return None
            return seen[0]
        if depth >= MAX_DEPTH:
            self._problem(
                node, "the document is nested too deeply (or an alias refers to itself)", path
            )
            return None
        if node.tag not in (_MAP, _SEQ):
            self._problem(node, f"unknown tag {node.tag!r} on a collection", path)
        weight = 1
        value: Any
        if cls is MappingNode:
            value = {}
            for key_node, value_node in node.value:
                key = self._key(key_node, path)
                if key is None:
                    continue
                if key in value:
                    first = self._find_key(node, key)
                    self._problem(
                        key_node,
                        f"duplicate key {key!r}",
                        (*path, key),
                        f"the first {key!r} is on line {first + 1}; keep one of them",
                        spoils_value=False,
                    )
                    continue
                if key == "<<":
                    self._problem(
                        key_node,
                        "merge keys (<<) are not supported",
                        path,
                        "write the keys out",
                    )
                    continue
                item = self.build(value_node, depth + 1, (*path, key))
                value[key] = item
                weight += self._weight(value_node)
        else:
            value = []
            for index, item_node in enumerate(node.value):
                value.append(self.build(item_node, depth + 1, (*path, index)))
                weight += self._weight(item_node)
        self._built[id(node)] = (value, weight)
        return value

    def _weight(self, node: Node) -> int:
        seen = self._built.get(id(node))
        return seen[1] if seen is not None else 1

    def _key(self, node: Node, path: tuple[str | int, ...]) -> str | int | None:
        if node.__class__ is not ScalarNode:
            self._problem(
                node, "a key must be a plain value, not a list or mapping", path, spoils_value=False
            )
            return None
        key = self._scalar(node, path)
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
        if key is None:
            self._problem(node, "a key cannot be empty (null)", path, spoils_value=False)
            return None
        if isinstance(key, bool):
            return str(node.value)
        self._problem(
            node, f"a key must be text, not {type(key).__name__}", path, spoils_value=False
        )
        return None

    @staticmethod
    def _find_key(node: Node, key: Any) -> int:
        for key_node, _ in node.value:
            if key_node.__class__ is ScalarNode and key_node.value == str(key):
                return int(key_node.start_mark.line)
        return int(node.start_mark.line)

    def _scalar(self, node: Node, path: tuple[str | int, ...]) -> Any:
        tag = node.tag
        value: str = node.value
        if tag == _STR:
            return value
        if tag == _INT:
            return _to_int(value)
        if tag == _BOOL:
            return value in _TRUE
        if tag == _NULL:
            return None
        if tag == _FLOAT:
            return _to_float(value)
        if tag == SECRET_TAG:
            name = value.strip()
            if not name:
                self._problem(node, "!secret needs a name", path, "write '!secret NAME'")
                return None
            return SecretRef(name)
        if tag == VAULT_TAG:
            return VaultText(value)
        self._problem(
            node, f"unknown tag {tag!r}", path, "the only tag a policy uses is '!secret NAME'"
        )
        return value

    def _problem(
        self,
        node: Node,
        message: str,
        path: tuple[str | int, ...],
        hint: str | None = None,
        spoils_value: bool = True,
    ) -> None:
        mark = node.start_mark
        self.problems.append(YamlProblem(mark.line, mark.column, message, hint, path, spoils_value))


def _to_int(value: str) -> int:
    if value.startswith("0o"):
        return int(value[2:], 8)
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)


def _to_float(value: str) -> float:
    lowered = value.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(value)


# ------------------------------------------------------------------ finding nodes


class NodeIndex:
    """Finds the node for a path (``('users', 'a@b.c', 'throttle')``) in a tree.

    Used only when there is something to report, so the index of a mapping's
    keys is built on first use and kept for the next lookup.
    """

    def __init__(self, root: Node | None) -> None:
        self.root = root
        self._keys: dict[int, dict[Any, tuple[Node, Node]]] = {}

    def walk(self, path: tuple[Any, ...]) -> Iterator[tuple[Node | None, Node]]:
        """Yield (key node, value node) for each step of the path that exists."""
        node = self.root
        if node is None:
            return
        for step in path:
            found = self._step(node, step)
            if found is None:
                return
            key_node, node = found
            yield key_node, node

    def _step(self, node: Node, step: Any) -> tuple[Node | None, Node] | None:
        if isinstance(node, MappingNode) and not isinstance(step, bool):
            keys = self._keys.get(id(node))
            if keys is None:
                keys = self._keys[id(node)] = _key_index(node)
            return keys.get(step)
        if isinstance(node, SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            return None, node.value[step]
        return None


def _key_index(node: MappingNode) -> dict[Any, tuple[Node, Node]]:
    index: dict[Any, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        if key_node.__class__ is ScalarNode:
            value = key_node.value
            key: Any = value
            if key_node.tag == _INT:
                key = _to_int(value)
            index.setdefault(key, (key_node, value_node))
    return index
