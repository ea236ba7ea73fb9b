"""Jinja2 for config files: strict about undefined values, no logic of its own.

Templates only print what Python computed; a managed-by header starts every file.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from postwarden.render.guard import Continued, UnsafeValue, one_line

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
        finalize=_one_line,
    )


def _one_line(value: Any) -> Any:
    """Every value a template prints stays on its line, unless it was built to
    continue on the next ones (``guard.continued``)."""
    if isinstance(value, str) and not isinstance(value, Continued):
        one_line(value, "a template value")
    return value


def header(policy: str, comment: str = "#") -> str:
    one_line(policy, "the policy's name in the header")
    return "".join(f"{comment} {line.format(policy=policy)}\n" for line in HEADER_LINES)


def render_template(name: str, policy: str, comment: str = "#", **values: Any) -> str:
    try:
        body = environment().get_template(name).render(**values)
    except UnsafeValue as unsafe:
        raise UnsafeValue(name.removesuffix(".j2"), unsafe.why) from None
    return header(policy, comment) + body
