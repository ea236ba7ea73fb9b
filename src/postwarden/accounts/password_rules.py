"""Does a password meet the policy's `password_policy`? Pure: the reasons it does
not, in words a user can act on; none when it does."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from postwarden.accounts.common_passwords import common_passwords
from postwarden.policy.models.password_policy import PasswordPolicy

CLASSES = (
    ("lower case", re.compile(r"[a-z]")),
    ("upper case", re.compile(r"[A-Z]")),
    ("digits", re.compile(r"[0-9]")),
    ("symbols", re.compile(r"[^A-Za-z0-9]")),
)
SHORTEST_PERSONAL = 3
"""Parts of a name or address shorter than this are too common inside words to refuse."""
LEET = {
    "0": "o",
    "1": "il",
    "3": "e",
    "4": "a",
    "5": "s",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "+": "t",
}
"""Characters people put for letters (zxcvbn's l33t table, in short): a 'P@ssw0rd'
is still 'password'."""
MOST_SPELLINGS = 64
"""Bounds the work on a password full of ambiguous characters."""
EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")
"""Digits and symbols around a word: 'password123!' is 'password' with an ending."""


@dataclass(frozen=True)
class Account:
    """What a password must not be built from."""

    address: str
    name: str | None = None

    def personal_words(self) -> list[str]:
        local, _, domain = self.address.lower().partition("@")
        words = re.split(r"[._+\-]", local)
        words.append(local)
        words += domain.split(".")[:-1]  # not the top-level domain
        words += re.split(r"[\s.\-']+", (self.name or "").lower())
        return sorted({w for w in words if len(w) >= SHORTEST_PERSONAL}, key=lambda w: (-len(w), w))


def spellings(password: str) -> set[str]:
    """The password in lower case as written and with the l33t characters read as
    letters (each ambiguous one both ways, up to MOST_SPELLINGS)."""
    lowered = password.lower()
    choices = [LEET.get(char, "") + char for char in lowered]
    found = {lowered}
    for combination in itertools.islice(itertools.product(*choices), MOST_SPELLINGS):
        found.add("".join(combination))
    return found


def problems(password: str, rules: PasswordPolicy, account: Account) -> list[str]:
    """Why ``password`` breaks ``rules`` for ``account``; empty when it does not."""
    found = []
    if len(password) < rules.min_length:
        found.append(f"it has {len(password)} characters; the policy asks for {rules.min_length}")
    present = [label for label, pattern in CLASSES if pattern.search(password)]
    if len(present) < rules.min_character_classes:
        found.append(
            f"it mixes {len(present)} of lower case, upper case, digits and symbols; "
            f"the policy asks for {rules.min_character_classes}"
        )
    if "\n" in password or "\r" in password or "\0" in password:
        found.append("it holds a line break or a NUL, which no mail client can send")
    forms = spellings(password)
    if rules.forbid_common:
        cores = forms | {EDGES.sub("", form) for form in forms}
        if cores & common_passwords():
            found.append("it is, or is built on, one of the 10,000 most common passwords")
    if rules.forbid_personal:
        words = [w for w in account.personal_words() if any(w in form for form in forms)]
        if words:
            found.append(f"it contains {words[0]!r}, from the user's address or name")
    return found
