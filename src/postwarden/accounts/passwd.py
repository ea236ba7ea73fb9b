"""`postwarden passwd`: a new password for one user, checked against the policy,
hashed in its scheme, and written into the secrets file with the time it was set."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from postwarden.accounts.hashing import SchemeUnavailable, hash_password
from postwarden.accounts.password_rules import Account, problems
from postwarden.accounts.secrets_edit import CannotEdit, set_password
from postwarden.policy.load import LoadedPolicy
from postwarden.policy.secrets import TIME_FORMAT
from postwarden.policy.suggest import did_you_mean


@dataclass
class Refused(Exception):
    """The password was not set; ``reasons`` say why, each on its own."""

    reasons: list[str]


def account_of(loaded: LoadedPolicy, address: str) -> Account:
    """Raises Refused for an address that is not a user of the policy."""
    wanted = address.strip().lower()
    user = loaded.policy.users.get(wanted)
    if user is None:
        hint = did_you_mean(wanted, loaded.policy.users)
        raise Refused(
            [f"{address} is not a user of {loaded.policy_file}" + (f" ({hint})" if hint else "")]
        )
    return Account(wanted, user.name)


def change_password(
    loaded: LoadedPolicy,
    address: str,
    password: str,
    secrets_file: Path,
    vault_password_file: Path | None,
    now: float | None = None,
) -> Account:
    """Raises Refused; nothing is written then."""
    account = account_of(loaded, address)
    rules = loaded.policy.password_policy
    found = problems(password, rules, account)
    if found:
        raise Refused(found)
    try:
        password_hash = hash_password(password, rules.hash_scheme)
    except (SchemeUnavailable, ValueError) as error:
        raise Refused([str(error)]) from None
    moment = time.strftime(TIME_FORMAT, time.gmtime(time.time() if now is None else now))
    try:
        set_password(secrets_file, account.address, password_hash, moment, vault_password_file)
    except CannotEdit as error:
        raise Refused([str(error)]) from None
    return account
