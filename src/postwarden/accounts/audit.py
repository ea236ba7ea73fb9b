"""`postwarden audit passwords`: what is wrong with the passwords already set.

Without any guessing: a user with no hash, a hash in a scheme that is not the
policy's (or one postwarden does not know), a password older than `max_age` or
with no record of when it was set. With guessing, bounded: the most common
passwords and the user's own words (local part, name, domain, with the endings
people add) are tried against each hash. A try costs what the hash was made to cost
(an argon2id check is tens of milliseconds and 64 MiB), so the audit says how many
tries it will make before it starts, runs them on every core, and stops trying a
user at the first hit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from postwarden.accounts.common_passwords import most_common
from postwarden.accounts.hashing import matches
from postwarden.accounts.password_rules import Account
from postwarden.policy.checks import hash_scheme_of
from postwarden.policy.models import Policy
from postwarden.policy.secrets import Secrets

DEFAULT_COMMON_TRIES = 20
ENDINGS = ("", "1", "123", "!", "2025", "2026")
"""What people put after a word to pass a rule; with the word as written and with a
capital first letter."""


@dataclass(frozen=True)
class Failure:
    address: str
    problem: str
    """One of: no password, scheme, unknown scheme, expired, age unknown, common, personal."""
    detail: str


@dataclass(frozen=True)
class Expiring:
    """A password that expires within ``max_age_warning``: not a failure yet, but its
    user is told (with ``audit.notify_users``)."""

    address: str
    expires: float
    refused_from: float
    """When it stops working at login: ``max_age_grace`` after it expires."""

    def detail(self) -> str:
        return f"expires on {day(self.expires)}, stops working at login on {day(self.refused_from)}"


def day(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


@dataclass(frozen=True)
class Guessing:
    """The tries for one user's hash, in the order they are made."""

    address: str
    password_hash: str
    scheme: str
    candidates: list[tuple[str, str]]
    """(problem, candidate): ``common`` or ``personal``."""


@dataclass(frozen=True)
class AuditPlan:
    failures: list[Failure]
    """What is known without guessing."""
    guessing: list[Guessing]
    expiring: list[Expiring] = field(default_factory=list)

    @property
    def tries(self) -> int:
        return sum(len(g.candidates) for g in self.guessing)

    def seconds_per_try(self) -> float:
        """One wrong guess against the first hash, timed: what each try will cost."""
        if not self.guessing:
            return 0.0
        first = self.guessing[0]
        began = time.perf_counter()
        matches("\x00not a password\x00", first.password_hash, first.scheme)
        return time.perf_counter() - began


def hashes_from_passdb(path: Path) -> dict[str, str]:
    """The hashes in Dovecot's passdb as postwarden renders it (``user:{SCHEME}hash``),
    for an audit on a host, where the secrets file is not. Raises OSError."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        user, _, rest = line.partition(":")
        found[user.lower()] = rest.split(":", 1)[0]
    return found


def personal_candidates(account: Account) -> list[str]:
    words = account.personal_words()
    found = dict.fromkeys(
        form + ending for word in words for form in (word, word.capitalize()) for ending in ENDINGS
    )
    return list(found)


def plan_audit(
    policy: Policy, secrets: Secrets, common_tries: int, now: float | None = None
) -> AuditPlan:
    """What the audit will find without guessing, and the guesses it will make."""
    moment = time.time() if now is None else now
    rules = policy.password_policy
    failures: list[Failure] = []
    guessing: list[Guessing] = []
    expiring: list[Expiring] = []
    common = most_common(common_tries) if rules.forbid_common else []
    for address, user in sorted(policy.users.items()):
        if user.disabled:
            continue
        password_hash = secrets.password_hashes.get(address)
        if password_hash is None:
            failures.append(Failure(address, "no password", "no hash in the secrets file"))
            continue
        scheme = hash_scheme_of(password_hash)
        if scheme is None:
            failures.append(Failure(address, "unknown scheme", "not a hash postwarden reads"))
            continue
        if scheme != rules.hash_scheme:
            failures.append(
                Failure(address, "scheme", f"hashed with {scheme}, not {rules.hash_scheme}")
            )
        if rules.max_age is not None:
            set_at = secrets.password_set.get(address)
            if set_at is None:
                failures.append(
                    Failure(
                        address,
                        "age unknown",
                        "no record of when it was set; set it with postwarden passwd",
                    )
                )
            elif moment - set_at > rules.max_age:
                days = int((moment - set_at) // 86400)
                refused = set_at + rules.max_age + rules.max_age_grace
                when = (
                    f"refused at login since {day(refused)}"
                    if moment >= refused
                    else f"stops working at login on {day(refused)}"
                )
                failures.append(
                    Failure(
                        address,
                        "expired",
                        f"set {days} days ago; max_age is {rules.max_age}; {when}",
                    )
                )
            elif moment + rules.max_age_warning >= set_at + rules.max_age:
                expiring.append(
                    Expiring(
                        address,
                        set_at + rules.max_age,
                        set_at + rules.max_age + rules.max_age_grace,
                    )
                )
        candidates = [("common", word) for word in common]
        if rules.forbid_personal:
            candidates += [
                ("personal", word) for word in personal_candidates(Account(address, user.name))
            ]
        if candidates:
            guessing.append(Guessing(address, password_hash, scheme, candidates))
    return AuditPlan(failures, guessing, expiring)


CHUNK = 8
"""Tries per task: small enough for a steady progress bar, large enough to keep the
pool's overhead out of the way."""


def guess(
    plan: AuditPlan,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Failure]:
    """Try the plan's candidates on every core; the users whose password was guessed,
    each once (a user's remaining tries are skipped after a hit). ``progress`` is told
    how many tries are done (or skipped), as they finish."""
    guessed: dict[str, Failure] = {}
    tasks = [
        (guessing, first)
        for guessing in plan.guessing
        for first in range(0, len(guessing.candidates), CHUNK)
    ]

    def attempt(task: tuple[Guessing, int]) -> tuple[int, Failure | None]:
        guessing, first = task
        chunk = guessing.candidates[first : first + CHUNK]
        if guessing.address in guessed:
            return len(chunk), None
        for problem, candidate in chunk:
            if matches(candidate, guessing.password_hash, guessing.scheme):
                return len(chunk), _guessed(guessing, problem)
        return len(chunk), None

    done = 0
    # argon2 and bcrypt release the interpreter while they hash: threads use the cores
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for tried, failure in pool.map(attempt, tasks):
            done += tried
            if failure is not None:
                guessed.setdefault(failure.address, failure)
            if progress is not None:
                progress(done)
    return list(guessed.values())


def _guessed(guessing: Guessing, problem: str) -> Failure:
    # Neither the password nor which try found it: the report goes to logs and
    # mailboxes, and the rank in a public list of common passwords is the password.
    what = (
        "one of the most common passwords"
        if problem == "common"
        else "built from the user's own address or name"
    )
    return Failure(guessing.address, problem, what)
