"""Jinja2 for config files: strict about undefined values, no logic of its own.

Templates only print what Python computed; a managed-by header starts every file.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

HEADER_LINES = (
    "managed by postwarden - do not edit: changes are overwritten",
    "source: {policy}",
)


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("postwarden.render", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def header(policy: str, comment: str = "#") -> str:
    return "".join(f"{comment} {line.format(policy=policy)}\n" for line in HEADER_LINES)


def render_template(name: str, policy: str, comment: str = "#", **values: Any) -> str:
    body = environment().get_template(name).render(**values)
    return header(policy, comment) + body
