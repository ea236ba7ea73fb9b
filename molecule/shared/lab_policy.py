#!/usr/bin/env python3
"""The policy the `default` scenario deploys: the example inventory's, with what only
a throwaway host can prove changed, and nothing else:

- notifications go through the host's own Postfix (127.0.0.1:25, no login) to the
  admins at postmaster@example.com, alice's alias, where the verifiers read them;
- queue.size, system.memory and system.disk fire at thresholds the host reaches
  within the verify step (3 messages, 1% of memory or disk, for 30 s).

    lab_policy.py EXAMPLE_POLICY OUTPUT
"""

from __future__ import annotations

import sys
from pathlib import Path

CHANGES = (
    (
        "    port: 587\n    username: alerts@example.com\n    password: !secret relay_password\n",
        "    port: 25\n    username: alerts@example.com\n    starttls: false\n",
    ),
    ("smtp.relay.example.net", "127.0.0.1"),
    ("    email: [ops@example.com]\n", "    email: [postmaster@example.com]\n"),
    ("    above: 500\n    for: 10m\n", "    above: 3\n    for: 30s\n"),
    (
        "  - on: system.memory\n    above: 90%\n    notify: [admins]\n",
        "  - on: system.memory\n    above: 1%\n    for: 30s\n    notify: [admins]\n"
        "  - on: system.disk\n    above: 1%\n    for: 30s\n    notify: [admins]\n",
    ),
)


def lab_policy(example: str) -> str:
    """The example's text with CHANGES made; each must apply exactly once."""
    text = example
    for old, new in CHANGES:
        if text.count(old) != 1:
            raise SystemExit(f"lab_policy: the example no longer has {old!r} exactly once")
        text = text.replace(old, new)
    return text


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    Path(target).write_text(lab_policy(Path(source).read_text()))
