"""Where a finding is: from its path in a document to a file, line and column."""

from __future__ import annotations

from collections.abc import Mapping

from yaml.nodes import CollectionNode

from postwarden.policy.problems import Finding, Problem, dotted
from postwarden.policy.yaml_source import NodeIndex, YamlDocument


def place(
    findings: list[Finding], sources: Mapping[str, tuple[str, YamlDocument | None]]
) -> list[Problem]:
    """Give every finding its file, line and column; ``sources`` maps a finding's
    source to its file name and parsed document."""
    indexes = {
        source: NodeIndex(document.root)
        for source, (_, document) in sources.items()
        if document is not None
    }
    problems = []
    for finding in findings:
        line, column = finding.at or _position(indexes.get(finding.source), finding)
        problems.append(
            Problem(
                sources[finding.source][0],
                line + 1,
                column + 1,
                dotted(finding.path),
                finding.message,
                finding.hint,
                finding.severity,
            )
        )
    return problems


def _position(index: NodeIndex | None, finding: Finding) -> tuple[int, int]:
    if index is None or index.root is None:
        return 0, 0
    steps = list(index.walk(finding.path))
    if not steps:
        mark = index.root.start_mark
        return mark.line, mark.column
    complete = len(steps) == len(finding.path)
    key_node, value_node = steps[-1]
    node = value_node
    block = isinstance(value_node, CollectionNode) and not value_node.flow_style
    if not complete or finding.point_at != "value" or block:
        # a key itself, a missing key, or a whole block mapping or list (which
        # starts on the next line): point at the entry by its key where it has one
        node = key_node or value_node
    return node.start_mark.line, node.start_mark.column
